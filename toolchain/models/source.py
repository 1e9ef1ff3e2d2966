"""Build or load the float model a recipe names, and describe its inputs without building it when possible.

Model files: ``.keras`` (saved by tf_keras or by Keras 3), ``.h5`` (older Keras), Keras SavedModel directories,
``.tflite`` (its inputs are read from the flatbuffer, no TensorFlow) and PyTorch ``.pt2`` (``models.flatbuffer``).
"""

from __future__ import annotations

from pathlib import Path

from toolchain.config.recipe import ModelSpec
from toolchain.data.sources import InputSpec
from toolchain.errors import DataShapeError, InputError, MissingInputError, OfflineError
from toolchain.models.compat import keras, tf


def check_offline(spec: ModelSpec) -> None:
    """Refuse anything that would download, before any work is done."""
    if spec.weights == "imagenet":
        raise OfflineError(
            "model.weights: 'imagenet' would download pretrained weights, and the toolchain runs "
            "without network access; use 'weights: none' (train from scratch) or 'file:' a saved model"
        )
    for what, path in (("model.file", spec.file), ("model.reference", spec.reference)):
        if path is not None and not Path(path).exists():
            raise MissingInputError(f"{what}: {path} does not exist")
        if path is not None and Path(path).suffix == ".tflite":  # bad indices, huge declared tensors: before a
            from toolchain.tflite_model import TFLiteModel  # runtime loads it

            try:
                TFLiteModel.from_file(path)
            except InputError as exc:
                raise InputError(f"{what}: {exc}") from None
    from toolchain.models.flatbuffer import require_extra

    require_extra(spec)


class SignatureModel:
    """One signature of a SavedModel, with the little of a Keras model's interface the stages use: ``inputs``,
    ``outputs``, ``input_names``, ``output_names`` (sorted, as the signature's dicts have no order) and ``predict``."""

    def __init__(self, path: Path, signature: str):
        t = tf()
        try:
            self.loaded = t.saved_model.load(str(path))
        except Exception as exc:
            raise InputError(f"model.file: cannot load the SavedModel {path}: {str(exc).splitlines()[0]}") from None
        if signature not in self.loaded.signatures:
            known = ", ".join(self.loaded.signatures) or "none"
            raise InputError(f"model.signature: {path.name} has no signature {signature!r} (it has: {known})")
        self.path, self.signature, self.fn = Path(path), signature, self.loaded.signatures[signature]
        kwargs = self.fn.structured_input_signature[1]
        self.input_names = sorted(kwargs)
        self.inputs = [kwargs[n] for n in self.input_names]
        self.output_names = sorted(self.fn.structured_outputs)
        self.outputs = [self.fn.structured_outputs[n] for n in self.output_names]

    def __call__(self, xs, training=False):
        out = self.fn(**dict(zip(self.input_names, xs if isinstance(xs, (list, tuple)) else [xs], strict=True)))
        return [out[n] for n in self.output_names]

    def predict(self, xs, batch_size: int = 64, verbose: int = 0) -> list:
        import numpy as np

        xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
        parts = [self([x[i : i + batch_size] for x in xs]) for i in range(0, len(xs[0]), batch_size)]
        return [np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(len(self.output_names))]


def build_model(spec: ModelSpec, task: str = "classification"):
    check_offline(spec)
    k = keras()
    if spec.application == "Transformer":
        from toolchain.models.transformer import build_transformer

        return plain_names(build_transformer(spec))
    if spec.application == "Decoder":
        from toolchain.models.decoder import build_decoder

        return plain_names(build_decoder(spec))
    if spec.application:
        ctor = getattr(k.applications, spec.application)
        kwargs = dict(input_shape=tuple(spec.input_shape), alpha=spec.alpha, weights=None, classes=spec.classes)
        if spec.application.startswith("MobileNetV3"):
            kwargs["include_preprocessing"] = False  # the data stage normalizes
        try:
            return plain_names(ctor(**kwargs))
        except ValueError as exc:
            raise InputError(f"model: cannot build {spec.application}: {exc}") from None
    if spec.signature is not None:
        return SignatureModel(Path(spec.file), spec.signature)
    return load_model_file(Path(spec.file), spec, task)


def plain_names(model):
    """The model rebuilt with the layers Keras named by a process-wide counter (MobileNetV2's
    ``global_average_pooling2d_5`` and ``input_6`` when the process built five models before) named by their order
    in this model: ``global_average_pooling2d``, ``_1``... and the same weights. The names reach the saved model and
    the artifact's tensor names: a search worker's later trial and a fresh build of one recipe wrote other bytes."""
    import re

    from tf_keras.src.utils.generic_utils import to_snake_case

    if type(model).__name__ != "Functional":
        return model
    seen: dict[str, int] = {}
    names = {}
    for layer in model.layers:
        base = "input" if type(layer).__name__ == "InputLayer" else to_snake_case(type(layer).__name__)
        if re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name):
            n = seen[base] = seen.get(base, -1) + 1
            names[layer.name] = base if n == 0 else f"{base}_{n}"
    kept = [layer.name for layer in model.layers if layer.name not in names]
    if all(old == new for old, new in names.items()) or len(set(kept) | set(names.values())) < len(model.layers):
        return model  # named already, or two layers would share a name

    def renamed(node):
        if isinstance(node, dict):
            return {k: renamed(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(renamed(v) for v in node)
        return names.get(node, node) if isinstance(node, str) else node

    twin = type(model).from_config(renamed(model.get_config()))
    twin.set_weights(model.get_weights())
    return twin


def load_model_file(path: Path, spec: ModelSpec | None = None, task: str = "classification"):
    """A Keras model from a file: tf_keras first (it reads .h5, SavedModels and its own .keras), then Keras 3."""
    if not (path.suffix in (".keras", ".h5") or (path.is_dir() and (path / "saved_model.pb").exists())):
        raise InputError(f"model.file: {path} is not a .keras, .h5, .tflite or .pt2 file or a SavedModel directory")
    from toolchain.models.custom import register

    register()  # the toolchain's own layers and activations load by name
    try:
        model = keras().models.load_model(path, compile=False)
    except Exception as first:  # Keras raises many types for unreadable files
        if path.suffix != ".keras":
            raise InputError(f"model.file: cannot load {path}: {str(first).splitlines()[0]}") from None
        try:
            import keras as keras3  # a .keras file written by Keras 3

            model = keras3.models.load_model(path, compile=False)
        except Exception:
            raise InputError(f"model.file: cannot load {path}: {str(first).splitlines()[0]}") from None
    if spec is not None and spec.input_shape is not None and len(model.inputs) == 1:
        shape = tuple(model.inputs[0].shape[1:])
        if shape != tuple(spec.input_shape):
            raise DataShapeError(
                f"model.input_shape: recipe says {tuple(spec.input_shape)} but {path.name} takes {shape}"
            )
    if spec is not None and task == "classification" and model.outputs[0].shape[-1] != spec.classes:
        raise DataShapeError(
            f"model.classes: recipe says {spec.classes} but {path.name} outputs {model.outputs[0].shape[-1]}"
        )
    return model


def clean_name(name: str) -> str:
    """An input's name as users write it: without the converter's ``serving_default_`` and ``:0``."""
    return name.removeprefix("serving_default_").split(":")[0]


def keras_inputs(model) -> list[InputSpec]:
    names = getattr(model, "input_names", None) or [t.name for t in model.inputs]
    return [
        InputSpec(clean_name(n), tuple(None if d is None else int(d) for d in t.shape[1:]))
        for n, t in zip(names, model.inputs, strict=True)
    ]


def input_specs(spec: ModelSpec, task: str = "classification", layout: str | None = None) -> list[InputSpec]:
    """The model's inputs (names, per-sample shapes) without building it when the recipe or the file says them."""
    if spec.kind in ("torch", "onnx"):
        from toolchain.models.flatbuffer import input_specs as flatbuffer_inputs

        return flatbuffer_inputs(spec, layout)
    if spec.application == "Decoder":
        return [InputSpec("tokens", (spec.decoder.context,))]
    if spec.application:
        return [InputSpec("x", tuple(spec.input_shape))]
    if spec.is_tflite:
        from toolchain.tflite_model import TFLiteModel

        m = TFLiteModel.from_file(spec.file)
        return [
            InputSpec(
                clean_name(m.tensors[i].name), tuple(d if d > 0 else None for d in m.tensors[i].shape_signature[1:])
            )
            for i in m.inputs
        ]
    return keras_inputs(build_model(spec, task))
