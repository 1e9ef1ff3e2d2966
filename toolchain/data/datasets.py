"""Load a data set, fit it to the model input, normalize it and split it (seeded).

Images are first scaled to [0, 1] (digits: /16, 8-bit images: /255, float .npz: as given),
resized to the model's height and width, turned gray->RGB or RGB->gray to match the model's
channels, then normalized with ``(x - mean) / std``.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from toolchain.config.recipe import DataSpec
from toolchain.errors import DataShapeError, InputError, NonFiniteError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_calib: np.ndarray
    y_calib: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    labels: tuple[str, ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_calib, self.y_calib, self.x_eval, self.y_eval):
            h.update(str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
        h.update("\n".join(self.labels).encode())
        return h.hexdigest()

    def save(self, path: Path) -> None:
        arrays = {k: getattr(self, k) for k in ("x_train", "y_train", "x_calib", "y_calib", "x_eval", "y_eval")}
        np.savez(path, labels=np.array(self.labels), **arrays)

    @classmethod
    def load(cls, path: Path) -> Dataset:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in z.files if k != "labels"}, labels=tuple(str(s) for s in z["labels"]))


def source_digest(spec: DataSpec) -> str:
    """What the raw data is, cheaply: the package version for builtins, file contents otherwise."""
    h = hashlib.sha256()
    if spec.builtin:
        h.update(f"builtin:{spec.builtin}:scikit-learn=={version('scikit-learn')}".encode())
    elif spec.npz:
        h.update(_read_bytes(spec.npz))
    else:
        for f in _image_files(spec.folder):
            h.update(str(f.relative_to(spec.folder)).encode() + hashlib.sha256(_read_bytes(f)).digest())
    return h.hexdigest()


def load_dataset(spec: DataSpec, input_shape: tuple[int, int, int], classes: int) -> Dataset:
    if spec.builtin == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)
        labels = tuple(str(i) for i in range(10))
    elif spec.npz:
        x, y, labels = _load_npz(spec.npz)
    else:
        x, y, labels = _load_folder(spec.folder)
    check_contracts(x, y, labels, classes, spec.npz or spec.folder or f"builtin:{spec.builtin}")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = y.astype(np.int64)
    labels = labels or tuple(str(i) for i in range(int(y.max()) + 1))
    x = _fit_to_input(x, input_shape)
    x = ((x - spec.normalization.mean) / spec.normalization.std).astype(np.float32)
    return _split(x, y, labels, spec)


def check_contracts(x: np.ndarray, y: np.ndarray, labels: tuple[str, ...], classes: int, where) -> None:
    """What the data must be before anything trains on it: numeric, finite samples; one integer class id per
    sample, in range; at least two classes."""
    if len(x) == 0:
        raise DataShapeError(f"{where}: the data set has no samples")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataShapeError(f"{where}: samples are of type {x.dtype}, not numbers")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise NonFiniteError(
            f"{where}: {int(bad.sum())} samples hold NaN or infinity; the first is sample {int(np.argmax(bad))}"
        )
    if len(y) != len(x):
        raise DataShapeError(f"{where}: x has {len(x)} samples but y has {len(y)}")
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        raise DataShapeError(f"{where}: labels are one-hot, shape {y.shape}; give class ids instead (y.argmax(axis=1))")
    if y.ndim != 1:
        raise DataShapeError(f"{where}: labels must be one class id per sample, shape ({len(x)},); got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number):
            raise DataShapeError(f"{where}: labels must be integer class ids, got type {y.dtype}")
        off = ~np.isfinite(y) | (y != np.round(y))
        if off.any():
            i = int(np.argmax(off))
            raise DataShapeError(f"{where}: labels must be integer class ids; sample {i} has label {y[i]:g}")
    if y.min() < 0:
        raise DataShapeError(
            f"{where}: sample {int(np.argmin(y))} has label {y.min():g}; class ids run from 0 to {classes - 1}"
        )
    if len(labels) > classes or int(y.max()) >= classes:
        raise DataShapeError(f"data has {max(len(labels), int(y.max()) + 1)} classes but the model outputs {classes}")
    if len(np.unique(y)) < 2:
        raise DataShapeError(f"{where}: every sample has label {y[0]:g}: a classifier needs at least two classes")


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read data: {exc.strerror}") from None


def _load_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"x", "y"} - set(z.files)
            if missing:
                raise InputError(f"{path}: .npz must hold arrays 'x' and 'y' (missing {', '.join(sorted(missing))})")
            x, y = z["x"], z["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read .npz: {str(exc) or type(exc).__name__}") from None
    if x.ndim == 0 or y.ndim == 0:
        raise DataShapeError(f"{path}: 'x' and 'y' must hold one entry per sample, got shapes {x.shape} and {y.shape}")
    return x, y, ()


def _image_files(folder: Path) -> list[Path]:
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: data folder does not exist or is not a directory")
    try:
        files = sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise InputError(f"{folder}: cannot read data folder: {exc.strerror}") from None
    if not files:
        raise InputError(f"{folder}: no PNG or JPEG images in class sub-folders")
    return files


def _load_folder(folder: Path):
    from PIL import Image, UnidentifiedImageError

    files = _image_files(folder)
    labels = tuple(sorted({f.relative_to(folder).parts[0] for f in files if len(f.relative_to(folder).parts) > 1}))
    if not labels:
        raise InputError(f"{folder}: images must be in one sub-folder per class")
    images, y = [], []
    size = None
    for f in files:
        parts = f.relative_to(folder).parts
        if len(parts) < 2:
            continue
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                size = size or im.size
                images.append(np.asarray(im.resize(size, Image.BILINEAR), dtype=np.float32) / 255.0)
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"{f}: cannot read image: {exc}") from None
        y.append(labels.index(parts[0]))
    return np.stack(images), np.array(y, dtype=np.int64), labels


def _fit_to_input(x: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Resize (N,H,W[,C]) images to the model's H, W and match its channel count."""
    from PIL import Image

    h, w, c = input_shape
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataShapeError(f"data samples have shape {x.shape[1:]}; expected images (H, W) or (H, W, C)")
    if x.shape[-1] not in (1, 3):
        raise DataShapeError(f"data images have {x.shape[-1]} channels; expected 1 or 3")
    if x.shape[1:3] != (h, w):
        x = np.stack(
            [
                np.stack(
                    [
                        np.asarray(Image.fromarray(img[..., ch]).resize((w, h), Image.BILINEAR))
                        for ch in range(img.shape[-1])
                    ],
                    -1,
                )
                for img in x
            ]
        )
    if x.shape[-1] != c:
        if c == 3:
            x = np.repeat(x, 3, axis=-1)
        elif c == 1:
            x = x.mean(axis=-1, keepdims=True)
        else:
            raise DataShapeError(f"model expects {c} input channels; data images have {x.shape[-1]}")
    return x.astype(np.float32)


def _split(x: np.ndarray, y: np.ndarray, labels: tuple[str, ...], spec: DataSpec) -> Dataset:
    n, split = len(x), spec.split
    order = np.random.default_rng(split.seed).permutation(n)
    n_train = int(round(n * split.train))
    n_calib = max(1, int(round(n * split.calibration)))
    sizes = {
        "train": n_train,
        "calibration": min(n_calib, n - n_train),
        "eval": n - n_train - min(n_calib, n - n_train),
    }
    empty = [k for k, v in sizes.items() if v == 0 and (k != "train" or split.train > 0)]
    if empty:
        shares = ", ".join(f"{k} {v} ({getattr(split, k):g})" for k, v in sizes.items())
        raise DataShapeError(f"data.split: {n} samples give {shares}: the {empty[0]} split would be empty")
    tr, ca, ev = order[:n_train], order[n_train : n_train + n_calib], order[n_train + n_calib :]
    return Dataset(x[tr], y[tr], x[ca], y[ca], x[ev], y[ev], labels)
