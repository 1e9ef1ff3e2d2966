"""Numbers that say how far an artifact's outputs are from the float reference's."""

from __future__ import annotations

import numpy as np


def top1(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def compare(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> dict:
    """``reference`` and ``outputs`` are (N, classes) float arrays on the same samples."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.sum(ref * out, axis=1) / np.where(norms == 0, 1, norms)
    err = out - ref
    return {
        "top1": top1(out, labels),
        "reference_top1": top1(ref, labels),
        "top1_agreement": float(np.mean(np.argmax(ref, -1) == np.argmax(out, -1))),
        "cosine": float(np.mean(cos)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "max_abs": float(np.max(np.abs(err))),
        "samples": int(len(labels)),
    }
