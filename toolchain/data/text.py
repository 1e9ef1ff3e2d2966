"""``data.text``: a text file as a language model's data: its bytes are the tokens (vocabulary: the 256 byte
values), cut into windows of the context; each window's labels are the same bytes one step on (the next token at
every position). Split in order, not shuffled: train first, then calibration, then eval, so the eval text is text
the model never saw (shuffled windows of one text would share their neighbours' phrases)."""

from __future__ import annotations

import stat
from pathlib import Path

from toolchain.config.recipe import DataSpec
from toolchain.errors import DataShapeError, InputError, MissingInputError

MAX_BYTES = 64 << 20  # a text a device model trains on here: a few MB; 64 MB is far past it


def read_text(path: Path) -> bytes:
    """The file's bytes: a regular file of at most ``MAX_BYTES`` (read at most one byte more: a device or a FIFO
    that says 0 in ``stat`` cannot make it read forever)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"data.text: {path} is not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise MissingInputError(f"data.text: {path}: file not found") from None
    except OSError as exc:
        raise InputError(f"data.text: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"data.text: {path} is larger than {MAX_BYTES >> 20} MB")
    return data


def load_text(spec: DataSpec, context: int):
    """The ``Dataset`` of ``spec.text``: ``xs`` (windows, context) int32 tokens, ``y`` the next tokens."""
    import numpy as np

    from toolchain.data.datasets import Dataset

    data = np.frombuffer(read_text(spec.text), dtype=np.uint8)
    n = (len(data) - 1) // context
    if n < 3:
        raise DataShapeError(
            f"data.text: {spec.text} has {len(data):,} bytes: fewer than 3 windows of the context ({context} tokens "
            "and the next)"
        )
    x = data[: n * context].reshape(n, context).astype(np.int32)
    y = data[1 : n * context + 1].reshape(n, context).astype(np.int64)
    split = spec.split
    n_train, n_calib = int(round(n * split.train)), max(1, int(round(n * split.calibration)))
    if n - n_train - n_calib < 1 or (split.train > 0 and n_train == 0):
        raise DataShapeError(
            f"data.split: {n} windows of {context} tokens give {n_train} train, {n_calib} calibration and "
            f"{n - n_train - n_calib} eval windows: a split would be empty"
        )
    a, b = n_train, n_train + n_calib
    return Dataset((x[:a],), y[:a], (x[a:b],), y[a:b], (x[b:],), y[b:], (), ("tokens",))
