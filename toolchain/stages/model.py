"""The model stages: build or load the float model, train it, compress it; the float reference outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.cache import Entry, Stage
from toolchain.errors import InputError, NonFiniteError
from toolchain.fsutil import capture_fds, sha256_tree
from toolchain.stages.context import Build
from toolchain.stages.data import Data

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
MODEL = Stage("model", 4, tools=("tensorflow", "tf_keras"))
#: a PyTorch or ONNX model: its float flatbuffer (litert-torch) and the framework's own outputs
CONVERTED = Stage("model", 3, tools=("torch", "litert-torch", "onnx", "onnx2torch", "onnxruntime"))
COMPRESS = Stage("compress", 6, tools=("tensorflow", "tf_keras", "tensorflow-model-optimization"))


@dataclass
class ModelStage:
    key: str
    path: Path | None  # the saved Keras model (.keras; .h5 after compression); None for a flatbuffer model
    _reference: object  # the float model's outputs on the eval split (one array per output), or a function reading
    # them from the cache when first used (a warm rebuild never does); None: no reference
    history: dict
    _model: object = None
    steps: list = field(default_factory=list)  # compression step reports
    signature: str | None = None  # ``path`` is a SavedModel converted through this signature
    float_graph: Path | None = None  # the float flatbuffer of a float .tflite, PyTorch or ONNX model

    @property
    def float_blob(self) -> bytes | None:
        return self.float_graph.read_bytes() if self.float_graph is not None else None

    def layer_names(self) -> set[str]:
        """The Keras model's layer names (empty for a flatbuffer model: its ops are named by their tensors)."""
        return set() if self.float_graph is not None else {layer.name for layer in getattr(self.keras(), "layers", [])}

    @property
    def reference(self) -> list[np.ndarray] | None:
        if callable(self._reference):
            self._reference = self._reference()
        return self._reference

    @property
    def is_qat(self) -> bool:
        """Its last compression step was QAT: its ranges are learnt, the converter quantizes it itself."""
        return any(s.get("step") == "qat" for s in self.steps)

    def keras(self):
        if self._model is None and self.signature is not None:
            from toolchain.models.source import SignatureModel

            self._model = SignatureModel(self.path, self.signature)
        if self._model is None:
            from toolchain.models.compat import keras
            from toolchain.models.source import load_model_file

            if self.path.suffix == ".h5":
                from toolchain.compress.qat import tfmot
                from toolchain.models.custom import register

                register()

                with tfmot().quantization.keras.quantize_scope():
                    self._model = keras().models.load_model(self.path, compile=False)
            else:
                self._model = load_model_file(self.path)
        return self._model


def predict(model, xs) -> list[np.ndarray]:
    """A Keras model's outputs on one array per input, as one array per output."""
    import numpy as np

    out = model.predict(list(xs) if len(xs) > 1 else xs[0], batch_size=64, verbose=0)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def _reference_of(spec, xs) -> list[np.ndarray] | None:
    """A .tflite model's reference: another .tflite (run on LiteRT) or a Keras model; None without one."""
    if spec.reference is None:
        return None
    if spec.reference.suffix == ".tflite":
        from toolchain.checks.litert import LiteRT

        return LiteRT(spec.reference.read_bytes()).predict(list(xs))
    from toolchain.models.source import load_model_file

    return predict(load_model_file(spec.reference), xs)


def _check_finite(reference: list[np.ndarray]) -> None:
    import numpy as np

    bad = np.zeros(len(reference[0]), dtype=bool)
    for r in reference:
        bad |= ~np.isfinite(r.reshape(len(r), -1)).all(axis=1)
    if bad.any():
        raise NonFiniteError(
            f"the float model's outputs are NaN or infinite on {int(bad.sum())} eval samples "
            f"(the first is eval sample {int(np.argmax(bad))})"
        )


def stage_model(b: Build, data: Data) -> ModelStage:
    r = b.recipe
    inputs = {
        "model": r.model.model_dump(mode="json", exclude={"file", "reference"}),
        "file": sha256_tree(r.model.file) if r.model.file else None,
        "reference": sha256_tree(r.model.reference) if r.model.reference else None,
        "task": r.task,
        "train": r.train.model_dump(mode="json") if r.train else None,
        **({"layout": r.data.layout} if r.model.kind == "onnx" else {}),
        "data": data.digest,
    }

    def compute(tmp: Path):
        from toolchain.checks.metrics import compare

        model, history = None, {}
        if r.model.kind in ("torch", "onnx"):
            from toolchain.models.flatbuffer import convert_float

            log.info("model: converting %s with litert-torch", r.model.file.name)
            with capture_fds(tmp / "convert.log"):
                reference = convert_float(r.model, data, tmp / "float.tflite", r.data.layout)
        elif r.model.is_tflite:
            reference = _reference_of(r.model, data.xs_eval)
        else:
            model, history = _train(b, data)
            reference = predict(model, data.xs_eval)
            if r.model.signature is None:  # a SavedModel signature is converted from its folder
                model.save(tmp / "model.keras")
        if reference is not None:
            import numpy as np

            _check_finite(reference)
            np.savez(tmp / "reference.npz", *reference)
            m = compare(None, reference, data.y_eval, r.task, first_input=data.xs_eval[0])
            name, value = m.headline[:2]
        else:
            name, value = "reference", None
        return {"reference_metric": [name, value], "history": history}, (model, reference)

    def load(entry: Entry):
        if "reference.npz" not in entry.meta["files"]:
            return None, None
        path = entry.file("reference.npz")  # checked now; read when first used

        def read():
            import numpy as np

            with np.load(path) as z:
                return [z[f"arr_{k}"] for k in range(len(z.files))]

        return None, read

    stage = CONVERTED if r.model.kind in ("torch", "onnx") else MODEL
    (model, reference), entry = b.cache.run(stage, inputs, compute, load)
    float_graph = None
    if r.model.kind in ("torch", "onnx"):
        path, float_graph = None, entry.file("float.tflite") if entry.hit else entry.dir / "float.tflite"
    elif r.model.is_tflite:
        path, float_graph = None, (r.model.file if _float_tflite(r.model.file) is not None else None)
        if float_graph is not None and reference is None and r.model.reference is None:
            reference = _own_outputs(float_graph, data)
    elif r.model.signature is not None:
        path = Path(r.model.file)
    else:
        path = entry.file("model.keras") if entry.hit else entry.dir / "model.keras"
    name, value = entry.meta["reference_metric"]
    cached = " (cached)" if entry.hit else ""
    if value is not None:
        log.info("model: float reference %s %.4f on %d eval samples%s", name, value, data.sizes["eval"], cached)
    elif float_graph is not None and r.model.is_tflite and r.model.reference is None:
        log.info("model: %s is a float model: its own outputs on LiteRT are the reference", r.model.file.name)
    elif reference is None:
        log.info("model: %s is used as it is, with no reference model to compare with%s", r.model.file.name, cached)
    if path is not None and r.model.signature is None:
        model = None  # read back from the entry, as a warm build does: the converter traces a loaded model's graph
        # with other names than the in-memory one it trained, so a cold and a warm build would differ in their bytes
    return ModelStage(
        entry.meta["key"],
        path,
        reference,
        entry.meta["history"],
        model,
        signature=r.model.signature,
        float_graph=float_graph,
    )


def _own_outputs(path: Path, data: Data):
    """A float .tflite's outputs on the eval split (LiteRT), computed when first asked for (a warm rebuild never)."""

    def run():
        from toolchain.checks.litert import LiteRT

        reference = LiteRT(path.read_bytes()).predict(list(data.xs_eval))
        _check_finite(reference)
        return reference

    return run


def _float_tflite(path: Path) -> bytes | None:
    """A .tflite file's bytes when it is a float model (the toolchain quantizes it), None when it is quantized."""
    from toolchain.stages.plan import numerics_of

    blob = path.read_bytes()
    return blob if numerics_of(blob).mode == "float32" else None


def _train(b: Build, data: Data):
    from toolchain.compress.train import fit
    from toolchain.models.compat import keras
    from toolchain.models.source import build_model

    r = b.recipe
    keras().utils.set_random_seed(r.train.seed if r.train else 0)  # initial weights too, not only the fit
    model = build_model(r.model, r.task)
    history = {}
    if r.train:
        from toolchain.convert.tflite import is_keras3

        if r.model.signature is not None:
            raise InputError(
                f"model.signature: a SavedModel signature is converted as it is; build {r.model.file.name} "
                "without 'train' (train it where it was written)"
            )
        if is_keras3(model):
            raise InputError(
                f"model.file: {r.model.file.name} was saved by Keras 3; the toolchain trains tf_keras models: "
                "train it in Keras 3 and build it without 'train', or save it with tf_keras"
            )
        log.info("train: %d epochs on %d samples (this is the slow part)", r.train.epochs, data.sizes["train"])
        xs, xv = list(data.xs_train), list(data.xs_eval)
        one = len(xs) == 1
        history = fit(model, xs[0] if one else xs, data.y_train, r.train, xv[0] if one else xv, data.y_eval, r.task)
    elif r.model.application:
        log.warning(
            "model: %s has random weights and no 'train' section: accuracy will be at chance", r.model.application
        )
    return model, history


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
        from toolchain.config.recipe import step_label

        log.info("compress: %s (cached)", " -> ".join(step_label(s) for s in steps))
    path = entry.file("model.h5") if entry.hit else entry.dir / "model.h5"
    # read back from the entry, as a warm build does (see stage_model): one graph for a cold and a warm build
    return ModelStage(entry.meta["key"], path, lambda: base.reference, base.history, None, steps)
