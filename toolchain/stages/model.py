"""The model stages: build or load the float model, train it, compress it; the float reference outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.cache import Entry, Stage
from toolchain.errors import NonFiniteError
from toolchain.fsutil import sha256_tree
from toolchain.stages.context import Build
from toolchain.stages.data import Data

log = logging.getLogger(__name__)
MODEL = Stage("model", 2, tools=("tensorflow", "tf_keras"))
COMPRESS = Stage("compress", 5, tools=("tensorflow", "tf_keras", "tensorflow-model-optimization"))


@dataclass
class ModelStage:
    key: str
    path: Path  # the saved Keras model (.keras; .h5 after compression, which may hold fake-quant wrappers)
    reference: np.ndarray  # outputs of the float model on the eval split: what every artifact is compared with
    history: dict
    _model: object = None
    steps: list = field(default_factory=list)  # compression step reports

    def keras(self):
        if self._model is None:
            from toolchain.models.compat import keras

            if self.path.suffix == ".h5":
                from toolchain.compress.qat import tfmot

                with tfmot().quantization.keras.quantize_scope():
                    self._model = keras().models.load_model(self.path, compile=False)
            else:
                self._model = keras().models.load_model(self.path, compile=False)
        return self._model


def stage_model(b: Build, data: Data) -> ModelStage:
    r = b.recipe
    inputs = {
        "model": r.model.model_dump(mode="json", exclude={"file"}),
        "file": sha256_tree(r.model.file) if r.model.file else None,
        "train": r.train.model_dump(mode="json") if r.train else None,
        "data": data.digest,
    }

    def compute(tmp: Path):
        from toolchain.checks.metrics import top1
        from toolchain.compress.train import fit
        from toolchain.models.compat import keras
        from toolchain.models.source import build_model

        keras().utils.set_random_seed(r.train.seed if r.train else 0)  # initial weights too, not only the fit
        model = build_model(r.model)
        history = {}
        if r.train:
            log.info("train: %d epochs on %d samples (this is the slow part)", r.train.epochs, data.sizes["train"])
            history = fit(model, data.x_train, data.y_train, r.train, data.x_eval, data.y_eval)
        elif r.model.application:
            log.warning(
                "model: %s has random weights and no 'train' section: accuracy will be at chance", r.model.application
            )
        reference = model.predict(data.x_eval, batch_size=64, verbose=0)
        bad = ~np.isfinite(reference.reshape(len(reference), -1)).all(axis=1)
        if bad.any():
            raise NonFiniteError(
                f"the float model's outputs are NaN or infinite on {int(bad.sum())} eval samples "
                f"(the first is eval sample {int(np.argmax(bad))})"
            )
        model.save(tmp / "model.keras")
        np.save(tmp / "reference.npy", reference)
        meta = {"reference_top1": top1(reference, data.y_eval), "history": history}
        return meta, (model, reference)

    def load(entry: Entry):
        return None, np.load(entry.file("reference.npy"))

    (model, reference), entry = b.cache.run(MODEL, inputs, compute, load)
    path = entry.file("model.keras") if entry.hit else entry.dir / "model.keras"
    log.info(
        "model: float reference top-1 %.4f on %d eval samples%s",
        entry.meta["reference_top1"],
        len(reference),
        " (cached)" if entry.hit else "",
    )
    return ModelStage(entry.meta["key"], path, reference, entry.meta["history"], model)


def stage_compress(b: Build, base: ModelStage, data: Data) -> ModelStage:
    """The recipe's compression steps over the trained float model (QAT, pruning, distillation)."""
    r = b.recipe
    if not r.compress:
        return base
    inputs = {
        "base": base.key,
        "steps": [s.model_dump(mode="json") for s in r.compress],
        "strategy": r.strategy.model_dump(mode="json"),
        "data": data.digest,
    }

    def compute(tmp: Path):
        from toolchain.compress.steps import run

        model, steps = run(base.keras(), r, data, base.keras())
        model.save(tmp / "model.h5")
        return {"steps": steps}, model

    model, entry = b.cache.run(COMPRESS, inputs, compute, lambda entry: None)
    steps = entry.meta["steps"]
    if entry.hit:
        log.info(
            "compress: %s (cached)",
            " -> ".join(s["step"] if s["step"] == "qat" else f"prune {s['method']}" for s in steps),
        )
    path = entry.file("model.h5") if entry.hit else entry.dir / "model.h5"
    return ModelStage(entry.meta["key"], path, base.reference, base.history, model, steps)
