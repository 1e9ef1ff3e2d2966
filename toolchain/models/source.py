"""Build or load the float Keras model a recipe names."""

from __future__ import annotations

from pathlib import Path

from toolchain.config.recipe import ModelSpec
from toolchain.errors import DataShapeError, InputError, OfflineError
from toolchain.models.compat import keras


def check_offline(spec: ModelSpec) -> None:
    """Refuse anything that would download, before any work is done."""
    if spec.weights == "imagenet":
        raise OfflineError(
            "model.weights: 'imagenet' would download pretrained weights, and the toolchain runs "
            "without network access; use 'weights: none' (train from scratch) or 'file:' a saved model"
        )
    if spec.file is not None and not Path(spec.file).exists():
        raise InputError(f"model.file: {spec.file} does not exist")


def build_model(spec: ModelSpec):
    check_offline(spec)
    k = keras()
    if spec.application:
        ctor = getattr(k.applications, spec.application)
        kwargs = dict(input_shape=tuple(spec.input_shape), alpha=spec.alpha, weights=None, classes=spec.classes)
        if spec.application.startswith("MobileNetV3"):
            kwargs["include_preprocessing"] = False  # the data stage normalizes
        try:
            return ctor(**kwargs)
        except ValueError as exc:
            raise InputError(f"model: cannot build {spec.application}: {exc}") from None
    return load_model_file(Path(spec.file), spec)


def load_model_file(path: Path, spec: ModelSpec):
    k = keras()
    if not (path.suffix in (".keras", ".h5") or (path.is_dir() and (path / "saved_model.pb").exists())):
        raise InputError(f"model.file: {path} is not a .keras or .h5 file or a SavedModel directory")
    try:
        model = k.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for unreadable files
        raise InputError(f"model.file: cannot load {path}: {str(exc).splitlines()[0]}") from None
    ins, outs = model.inputs or [], model.outputs or []
    if len(ins) != 1 or len(outs) != 1:
        raise DataShapeError(
            f"model.file: {path.name} has {len(ins)} inputs and {len(outs)} outputs; this version builds "
            "models with one input and one output"
        )
    if len(model.input_shape) != 4:
        raise DataShapeError(
            f"model.file: {path.name} takes input of shape {tuple(model.input_shape[1:])}; this version "
            "builds image models, input (height, width, channels)"
        )
    shape = tuple(model.input_shape[1:])
    if spec.input_shape is not None and shape != tuple(spec.input_shape):
        raise DataShapeError(f"model.input_shape: recipe says {tuple(spec.input_shape)} but {path.name} takes {shape}")
    if model.output_shape[-1] != spec.classes:
        raise DataShapeError(
            f"model.classes: recipe says {spec.classes} but {path.name} outputs {model.output_shape[-1]}"
        )
    return model


def input_shape_of(spec: ModelSpec) -> tuple[int, int, int]:
    """The model's (H, W, C) without building it when the recipe says it."""
    if spec.input_shape is not None:
        return tuple(spec.input_shape)
    return tuple(build_model(spec).input_shape[1:])
