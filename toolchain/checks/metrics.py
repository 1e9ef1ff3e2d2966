"""How far an artifact's outputs are from the labels (by task) and from the float reference's outputs.

Every output of the model is compared with the reference's same output (cosine, RMSE, max-abs error, SNR in dB);
the task's metrics use the first output: classification (top-1, top-5, per-class accuracy, confusion matrix,
agreement with the reference), regression (MAE, RMSE, R² against the labels), anomaly (reconstruction error of the
first input per sample, ROC AUC when labels mark anomalies with 1), none (parity only).
"""

from __future__ import annotations

import numpy as np

from toolchain.record import Metrics


def top1(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


def parity(reference: np.ndarray, outputs: np.ndarray) -> dict:
    """Cosine (mean over samples), RMSE, max-abs error and SNR (dB) of ``outputs`` against ``reference``."""
    ref, out = _flat(reference), _flat(outputs)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.sum(ref * out, axis=1) / np.where(norms == 0, 1, norms)
    err = out - ref
    noise = float(np.sum(err**2))
    snr = float(10 * np.log10(np.sum(ref**2) / noise)) if noise > 0 else float("inf")
    return {
        "cosine": float(np.mean(cos)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "max_abs": float(np.max(np.abs(err))),
        "snr_db": snr,
    }


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None without both classes."""
    pos, neg = scores[positive == 1], scores[positive == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # average ranks of ties
        tie = allv == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """exp of the mean negative log-likelihood of ``tokens`` under ``logits`` (..., vocab): a log-softmax in
    float64, so no probability rounds to 0."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(np.exp(-np.take_along_axis(logp, np.asarray(tokens)[..., None], axis=-1).mean()))


def _task(task: str, out: np.ndarray, labels, first_input, prefix: str = "") -> dict:
    if task == "language_model" and labels is not None:
        p = perplexity(out, labels)
        return {f"{prefix}perplexity": p if np.isfinite(p) else float("nan")}
    if task == "classification" and labels is not None:
        return {f"{prefix}top1": top1(out, labels)}
    if task == "regression" and labels is not None:
        pred, y = _flat(out), _flat(labels)
        mae = float(np.mean(np.abs(pred - y)))
        ss = float(np.sum((y - y.mean(axis=0)) ** 2))
        r2 = 1 - float(np.sum((pred - y) ** 2)) / ss if ss > 0 else None
        return {
            f"{prefix}mae": mae,
            f"{prefix}r2": r2,
            **({} if prefix else {"rmse_labels": float(np.sqrt(np.mean((pred - y) ** 2)))}),
        }
    if task == "anomaly" and first_input is not None:
        error = np.mean((_flat(out) - _flat(first_input)) ** 2, axis=1)
        auc = roc_auc(error, labels) if labels is not None else None
        return {f"{prefix}auc": auc, **({} if prefix else {"mean_error": float(np.mean(error))})}
    return {}


def compare(
    reference: list | np.ndarray | None,
    outputs: list | np.ndarray,
    labels: np.ndarray | None,
    task: str = "classification",
    first_input: np.ndarray | None = None,
    names: list[str] | None = None,
) -> Metrics:
    """``reference`` and ``outputs``: one (N, ...) array per model output, on the same N samples."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if reference is not None:
        reference = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    out = outputs[0]
    fields: dict = {"task": task, "samples": int(len(out))}
    fields |= _task(task, out, labels, first_input)
    if reference is not None:
        fields |= _task(task, reference[0], labels, first_input, prefix="reference_")
        per = [
            {"output": (names or [])[i] if names and i < len(names) else str(i), **parity(r, o)}
            for i, (r, o) in enumerate(zip(reference, outputs, strict=True))
        ]
        fields |= {k: per[0][k] for k in ("cosine", "rmse", "max_abs")}
        fields["snr_db"] = min(p["snr_db"] for p in per)
        fields["outputs"] = per
        if task in ("classification", "language_model"):  # a language model's: of the next token, every step
            fields["top1_agreement"] = float(np.mean(np.argmax(reference[0], -1) == np.argmax(out, -1)))
    if task == "classification" and labels is not None:
        k = min(5, out.shape[-1])
        topk = np.argsort(-out.reshape(len(out), -1), axis=1)[:, :k]
        fields["top5"] = float(np.mean([labels[i] in topk[i] for i in range(len(labels))]))
        classes = out.shape[-1]
        pred = np.argmax(out.reshape(len(out), -1), axis=1)
        confusion = np.zeros((classes, classes), dtype=int)
        np.add.at(confusion, (labels.astype(int), pred), 1)
        fields["confusion"] = confusion.tolist()
        counts = confusion.sum(axis=1)
        fields["per_class"] = [float(confusion[c, c] / counts[c]) if counts[c] else None for c in range(classes)]
    return Metrics(**fields)
