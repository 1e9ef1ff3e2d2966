"""The data stage: load, fit to the model input, normalize and split; cached as one ``.npz``.

A cached data set is opened only when a later stage needs its arrays (a warm rebuild never does):
its sizes, labels and digest live in the entry's metadata.
"""

from __future__ import annotations

import logging

from toolchain.cache import DamagedEntry, Entry, Stage
from toolchain.data.sources import source_digest
from toolchain.errors import DataShapeError
from toolchain.fsutil import sha256_tree
from toolchain.stages.context import Build

log = logging.getLogger(__name__)
STAGE = Stage("data", 3, tools=("scikit-learn", "numpy"))
SPLITS = ("train", "calib", "eval")


class Data:
    """The split data set: ``digest``, ``labels`` and ``sizes`` at once, the arrays when first used."""

    def __init__(self, meta: dict, load):
        self.digest, self.labels, self.sizes = meta["digest"], tuple(meta["labels"]), meta["sizes"]
        self._load, self._data = load, None

    def __getattr__(self, name: str):  # x_train, y_eval, ...
        if name.startswith("_"):
            raise AttributeError(name)
        if self._data is None:
            self._data = self._load()
        return getattr(self._data, name)


def _meta(d) -> dict:
    return {"digest": d.digest, "labels": list(d.labels), "sizes": {s: d.size(s) for s in SPLITS}}


def stage_data(b: Build) -> Data:
    spec, model = b.recipe.data, b.recipe.model
    # the model's input shape when the recipe says it; else the model file decides it (read only on a miss)
    shape_key = (
        list(model.input_shape) if model.input_shape else ("file", sha256_tree(model.file) if model.file else None)
    )
    inputs = {
        "spec": spec.model_dump(mode="json", exclude={"layout"} if spec.layout is None else None),
        "source": source_digest(spec),
        "calibration": source_digest(spec.calibration) if spec.calibration else None,
        "shape": shape_key,
        "classes": model.classes,
        "task": b.recipe.task,
    }

    def compute(tmp):
        from toolchain.data.datasets import load_dataset
        from toolchain.models.source import input_specs

        data = load_dataset(spec, input_specs(model, b.recipe.task, spec.layout), model.classes, b.recipe.task)
        data.save(tmp / "data.npz")
        return _meta(data), data

    def load(entry: Entry):
        def arrays():
            from toolchain.data.datasets import Dataset

            try:
                return Dataset.load(entry.file("data.npz"))
            except DamagedEntry as exc:  # damaged after the lookup: compute it again
                log.warning("cache: %s; loading the data again", exc)
                return b.cache.run(STAGE, inputs, compute, load, fresh=True)[0]

        return arrays

    value, entry = b.cache.run(STAGE, inputs, compute, load)
    data = Data(entry.meta, value if callable(value) else lambda: value)
    n = data.sizes
    if n["train"] == 0 and (b.recipe.train or b.recipe.compress):
        raise DataShapeError("data.split.train gives 0 training samples, but the recipe trains (train/compress)")
    log.info(
        "data: %d train / %d calibration / %d eval samples%s",
        n["train"],
        n["calib"],
        n["eval"],
        " (cached)" if entry.hit else "",
    )
    return data
