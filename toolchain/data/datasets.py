"""Load a data set, fit it to the model's inputs, normalize it and split it (seeded).

Images (builtin digits, image folders) are scaled to [0, 1] (digits: /16, 8-bit images: /255), resized to the
model's height and width and turned gray<->RGB to match its channels, then normalized with ``(x - mean) / std``
(default 0.5, 0.5). Arrays (``.npz``: one per model input) are used as given unless the recipe asks for
``normalization`` (8-bit arrays are then scaled to [0, 1] first) or ``resize``. Labels follow the task:
integer class ids (classification), numbers (regression), 0 normal / 1 anomalous (anomaly, optional), none.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from toolchain.config.recipe import DataSpec, Normalization
from toolchain.data.sources import InputSpec, image_files
from toolchain.errors import DataShapeError, InputError, MissingInputError, NonFiniteError

SPLITS = ("train", "calib", "eval")


@dataclass(frozen=True)
class Dataset:
    """Per split: one array per model input (``xs_*``) and the labels (``y_*``, None without labels)."""

    xs_train: tuple
    y_train: np.ndarray | None
    xs_calib: tuple
    y_calib: np.ndarray | None
    xs_eval: tuple
    y_eval: np.ndarray | None
    labels: tuple[str, ...]
    input_names: tuple[str, ...] = ("x",)

    def _single(self, xs: tuple) -> np.ndarray:
        if len(xs) != 1:
            raise DataShapeError(f"this step needs a single-input model; the data has {len(xs)} inputs")
        return xs[0]

    @property
    def x_train(self) -> np.ndarray:
        return self._single(self.xs_train)

    @property
    def x_eval(self) -> np.ndarray:
        return self._single(self.xs_eval)

    def size(self, split: str) -> int:
        return int(len(getattr(self, f"xs_{split}")[0]))

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for split in SPLITS:
            for a in (*getattr(self, f"xs_{split}"), getattr(self, f"y_{split}")):
                if a is not None:
                    h.update(str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
        h.update("\n".join(self.labels).encode())
        if self.input_names != ("x",):
            h.update("\n".join(self.input_names).encode())
        return h.hexdigest()

    def save(self, path: Path) -> None:
        arrays = {f"x_{s}_{i}": x for s in SPLITS for i, x in enumerate(getattr(self, f"xs_{s}"))}
        arrays |= {f"y_{s}": getattr(self, f"y_{s}") for s in SPLITS if getattr(self, f"y_{s}") is not None}
        np.savez(path, labels=np.array(self.labels, dtype=str), input_names=np.array(self.input_names), **arrays)

    @classmethod
    def load(cls, path: Path) -> Dataset:
        with np.load(path) as z:
            names = tuple(str(n) for n in z["input_names"])
            splits = {}
            for s in SPLITS:
                splits[f"xs_{s}"] = tuple(z[f"x_{s}_{i}"] for i in range(len(names)))
                splits[f"y_{s}"] = z[f"y_{s}"] if f"y_{s}" in z.files else None
            return cls(**splits, labels=tuple(str(v) for v in z["labels"]), input_names=names)


def load_dataset(spec: DataSpec, inputs, classes: int = 10, task: str = "classification") -> Dataset:
    """``inputs``: the model's ``InputSpec`` list (or one image shape ``(H, W, C)``)."""
    if isinstance(inputs, tuple):
        inputs = [InputSpec("x", inputs)]
    if spec.text is not None:
        from toolchain.data.text import load_text

        return load_text(spec, inputs[0].shape[0])
    images = spec.npz is None
    if spec.builtin == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        xs, y = [digits.images.astype(np.float32) / 16.0], digits.target.astype(np.int64)
        labels = tuple(str(i) for i in range(10))
    elif spec.npz:
        xs, y = _load_npz(spec.npz, inputs)
        labels = ()
    else:
        x, y, labels = _load_folder(spec.folder)
        xs = [x]
    where = spec.npz or spec.folder or f"builtin:{spec.builtin}"
    if images and len(inputs) != 1:
        raise DataShapeError(f"{where}: images feed a single-input model; the model has {len(inputs)} inputs")
    check_samples(xs, [i.name for i in inputs], where)
    y = check_labels(y, len(xs[0]), task, classes, labels, where)
    if task == "classification":
        labels = labels or tuple(str(i) for i in range(int(y.max()) + 1))
    xs = [_prepare(x, i, spec, images, where) for x, i in zip(xs, inputs, strict=True)]
    data = _split(xs, y, labels if task == "classification" else (), spec, tuple(i.name for i in inputs))
    if spec.calibration is None:
        return data
    calib, _ = _load_npz(spec.calibration.npz, inputs, labels=False)
    check_samples(calib, [i.name for i in inputs], spec.calibration.npz)
    calib = [_prepare(x, i, spec, False, spec.calibration.npz) for x, i in zip(calib, inputs, strict=True)]
    return replace(data, xs_calib=tuple(calib), y_calib=None)


def _prepare(x: np.ndarray, spec_in: InputSpec, spec: DataSpec, images: bool, where) -> np.ndarray:
    """Scale, resize and normalize as the source and the recipe ask; then the shape must be the model's."""
    norm = spec.normalization or (Normalization() if images else None)
    if x.dtype == np.uint8 and norm is not None:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not images and spec_in.channels_first and x.ndim == 4 and spec.layout != "nhwc":
        x = _channels_last(x, spec_in, where)
    if (spec.resize if spec.resize is not None else images) and spec_in.is_image:
        x = _fit_to_input(x, spec_in.shape)
    if norm is not None:
        x = ((x - norm.mean) / norm.std).astype(np.float32)
    given, want = tuple(x.shape[1:]), tuple(spec_in.shape)
    if not _fits(given, want):
        hint = " (set data.resize: true to fit images)" if spec_in.is_image and len(given) in (2, 3) else ""
        raise DataShapeError(
            f"{where}: input {spec_in.name!r} expects samples of shape {want}, the data has {given}{hint}"
        )
    return x


def check_samples(xs: list[np.ndarray], names: list[str], where) -> None:
    """Every input: samples present, numeric, finite, as many as the other inputs have."""
    for x, name in zip(xs, names, strict=True):
        label = f"{where}: input {name!r}" if len(xs) > 1 else f"{where}:"
        if len(x) == 0:
            raise DataShapeError(f"{label} the data set has no samples")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataShapeError(f"{label} samples are of type {x.dtype}, not numbers")
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise NonFiniteError(
                f"{label} {int(bad.sum())} of {len(x)} samples hold NaN or infinity; "
                f"the first is sample {int(np.argmax(bad))}"
            )
        if len(x) != len(xs[0]):
            raise DataShapeError(f"{where}: input {names[0]!r} has {len(xs[0])} samples but {name!r} has {len(x)}")


def check_labels(y, n: int, task: str, classes: int, labels: tuple, where) -> np.ndarray | None:
    """Labels as the task needs them: class ids (classification), numbers (regression), 0/1 (anomaly)."""
    if y is None:
        if task in ("classification", "regression"):
            raise DataShapeError(f"{where}: task {task} needs labels: an array 'y' with one entry per sample")
        return None
    if task == "none":
        return None
    if len(y) != n:
        raise DataShapeError(f"{where}: x has {n} samples but y has {len(y)}")
    if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise DataShapeError(f"{where}: labels must be numbers, got type {y.dtype}")
    if task == "regression":
        if not np.isfinite(y).all():
            raise NonFiniteError(
                f"{where}: label of sample {int(np.argmax(~np.isfinite(y.reshape(n, -1)).all(1)))} is not finite"
            )
        return y.astype(np.float32)
    if (
        y.ndim == 2
        and y.shape[1] > 1
        and np.isin(y, (0, 1)).all()
        and (y.sum(axis=1) == 1).all()
        and task == "classification"
    ):
        raise DataShapeError(f"{where}: labels are one-hot, shape {y.shape}; give class ids instead (y.argmax(axis=1))")
    if y.ndim != 1:
        raise DataShapeError(f"{where}: labels must be one class id per sample, shape ({n},); got shape {y.shape}")
    off = ~np.isfinite(y) | (y != np.round(y))
    if off.any():
        i = int(np.argmax(off))
        raise DataShapeError(f"{where}: labels must be integer class ids; sample {i} has label {y[i]:g}")
    if task == "anomaly":
        if not np.isin(y, (0, 1)).all():
            raise DataShapeError(
                f"{where}: anomaly labels are 0 (normal) or 1 (anomalous); found {sorted(set(y.tolist()) - {0, 1})[:3]}"
            )
        return y.astype(np.int64)
    if y.min() < 0:
        raise DataShapeError(
            f"{where}: sample {int(np.argmin(y))} has label {y.min():g}; class ids run from 0 to {classes - 1}"
        )
    if len(labels) > classes or int(y.max()) >= classes:
        raise DataShapeError(f"data has {max(len(labels), int(y.max()) + 1)} classes but the model outputs {classes}")
    if len(np.unique(y)) < 2:
        raise DataShapeError(f"{where}: every sample has label {y[0]:g}: a classifier needs at least two classes")
    return y.astype(np.int64)


def _channels_last(x: np.ndarray, spec_in: InputSpec, where) -> np.ndarray:
    """An NCHW model's image arrays, given in its layout, as the artifacts take them (channels last)."""
    h, w, c = spec_in.shape
    shape = tuple(x.shape[1:])
    if _fits(shape, (c, h, w)):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if _fits(shape, (h, w, c)):
        raise DataShapeError(
            f"{where}: input {spec_in.name!r}: samples of shape {shape} are channels last (NHWC); the model takes "
            f"NCHW {(c, h, w)}: give the data in the model's layout, or set data.layout: nhwc"
        )
    return x  # the shape check says what is wrong


def _fits(shape: tuple, want: tuple) -> bool:
    return len(shape) == len(want) and all(w is None or w == g for g, w in zip(shape, want, strict=True))


def _load_npz(path: Path, inputs: list[InputSpec], labels: bool = True) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One array per model input, by input name, ``x`` for a single input, or in order; labels ``y``."""
    try:
        if Path(path).suffix == ".npy":  # one input, no labels: memory-mapped, read as used
            arrays = {"x": np.load(path, allow_pickle=False, mmap_mode="r")}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise MissingInputError(f"{path}: data file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read .npz: {str(exc) or type(exc).__name__}") from None
    y = arrays.pop("y", None) if labels else None
    arrays.pop("y", None)
    names = [i.name for i in inputs]
    if all(n in arrays for n in names):
        xs = [arrays[n] for n in names]
    elif len(names) == 1 and "x" in arrays:
        xs = [arrays["x"]]
    elif len(arrays) == len(names):
        xs = list(arrays.values())  # in the file's order
    else:
        want = ", ".join(repr(n) for n in names) + (" (or 'x')" if len(names) == 1 else "")
        found = ", ".join(map(repr, arrays)) or "none"
        raise InputError(f"{path}: expected arrays {want}, one per model input, and optional labels 'y'; found {found}")
    if any(x.ndim == 0 for x in xs) or (y is not None and y.ndim == 0):
        raise DataShapeError(f"{path}: arrays must hold one entry per sample, got shapes {[x.shape for x in xs]}")
    return [np.asarray(x) for x in xs], (np.asarray(y) if y is not None else None)


def _load_folder(folder: Path):
    from PIL import Image, UnidentifiedImageError

    files = image_files(folder)
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


def _split(xs: list[np.ndarray], y, labels: tuple[str, ...], spec: DataSpec, names: tuple[str, ...]) -> Dataset:
    n, split = len(xs[0]), spec.split
    order = np.random.default_rng(split.seed).permutation(n)
    n_train = int(round(n * split.train))
    n_calib = 0 if spec.calibration else min(max(1, int(round(n * split.calibration))), n - n_train)
    sizes = {"train": n_train, "calibration": n_calib, "eval": n - n_train - n_calib}
    empty = [
        k
        for k, v in sizes.items()
        if v == 0 and (k != "train" or split.train > 0) and (k != "calibration" or not spec.calibration)
    ]
    if empty:
        shares = ", ".join(f"{k} {v} ({getattr(split, k):g})" for k, v in sizes.items())
        raise DataShapeError(f"data.split: {n} samples give {shares}: the {empty[0]} split would be empty")
    parts = order[:n_train], order[n_train : n_train + n_calib], order[n_train + n_calib :]
    take = lambda idx: (tuple(x[idx] for x in xs), y[idx] if y is not None else None)  # noqa: E731
    (xt, yt), (xc, yc), (xe, ye) = (take(i) for i in parts)
    return Dataset(xt, yt, xc, yc, xe, ye, labels, names)
