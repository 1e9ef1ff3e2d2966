"""Where data comes from, without loading it: ``InputSpec`` (what a model input takes) and ``source_digest``
(what the raw data is, cheaply: the cache key of the data stage). No NumPy here: a warm rebuild imports this."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from toolchain.cache import package_version
from toolchain.config.recipe import DataSpec
from toolchain.errors import InputError, MissingInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class InputSpec:
    """A model input as the data must match it: name and per-sample shape (``None``: any size)."""

    name: str
    shape: tuple  # as the artifacts take it: images channels last (H, W, C)
    channels_first: bool = False  # the model itself (PyTorch, ONNX) takes this input as (C, H, W)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


def source_digest(spec: DataSpec) -> str:
    """What the raw data is, cheaply: the package version for builtins, file contents otherwise."""
    h = hashlib.sha256()
    if getattr(spec, "builtin", None):
        h.update(f"builtin:{spec.builtin}:scikit-learn=={package_version('scikit-learn')}".encode())
    elif spec.npz:
        h.update(read_bytes(spec.npz))
    elif getattr(spec, "text", None):
        from toolchain.data.text import read_text

        h.update(b"text:" + read_text(spec.text))
    else:
        for f in image_files(spec.folder):
            h.update(str(f.relative_to(spec.folder)).encode() + hashlib.sha256(read_bytes(f)).digest())
    return h.hexdigest()


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise MissingInputError(f"{path}: data file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read data: {exc.strerror}") from None


def image_files(folder: Path) -> list[Path]:
    if not Path(folder).exists():
        raise MissingInputError(f"{folder}: data folder not found")
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: the data folder is not a directory")
    try:
        files = sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise InputError(f"{folder}: cannot read data folder: {exc.strerror}") from None
    if not files:
        raise InputError(f"{folder}: no PNG or JPEG images in class sub-folders")
    return files
