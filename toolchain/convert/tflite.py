"""The TFLite converter in one function, for the five quantize modes.

| mode     | weights        | activations | I/O                         |
|----------|----------------|-------------|-----------------------------|
| float32  | float32        | float32     | float32                     |
| dynamic  | int8           | float32     | float32 (dynamic-range)     |
| float16  | float16        | float32     | float32                     |
| int8     | int8           | int8        | int8, uint8 or float32      |
| int16x8  | int8           | int16       | int16 or float32            |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from toolchain.errors import ConversionError
from toolchain.models.compat import tf


@dataclass(frozen=True)
class ConvertPlan:
    mode: str
    io_type: str = "float32"
    per_channel: bool = True
    batch: int | None = None  # None keeps the batch axis dynamic

    def as_dict(self) -> dict:
        return asdict(self)


_IO_TYPES = {"int8": "int8", "uint8": "uint8", "int16": "int16", "float32": "float32"}
_VALID_IO = {
    "float32": {"float32"},
    "dynamic": {"float32"},
    "float16": {"float32"},
    "int8": {"int8", "uint8", "float32"},
    "int16x8": {"int16", "float32"},
}


def convert(model, plan: ConvertPlan, calibration: np.ndarray | None = None) -> bytes:
    """Convert a Keras model; ``calibration`` (float, preprocessed) is needed for int8 and int16x8."""
    t = tf()
    if plan.io_type not in _VALID_IO[plan.mode]:
        raise ConversionError(
            f"quantize.io_type: {plan.io_type!r} is not possible with mode {plan.mode!r} "
            f"(possible: {', '.join(sorted(_VALID_IO[plan.mode]))})"
        )
    spec = t.TensorSpec([plan.batch, *model.input_shape[1:]], t.float32)
    fn = t.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    conv = t.lite.TFLiteConverter.from_concrete_functions([fn], model)
    if plan.mode != "float32":
        conv.optimizations = [t.lite.Optimize.DEFAULT]
    if plan.mode == "float16":
        conv.target_spec.supported_types = [t.float16]
    if plan.mode in ("int8", "int16x8"):
        if calibration is None or len(calibration) == 0:
            raise ConversionError(f"mode {plan.mode!r} needs calibration samples")

        def representative():
            for sample in calibration:
                yield [sample[None].astype(np.float32)]

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [
            t.lite.OpsSet.TFLITE_BUILTINS_INT8
            if plan.mode == "int8"
            else t.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        io = getattr(t, _IO_TYPES[plan.io_type])
        conv.inference_input_type = io
        conv.inference_output_type = io
    if not plan.per_channel:
        conv._experimental_disable_per_channel = True
    try:
        return conv.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError ...
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConversionError(f"TFLite converter failed ({plan.mode}): {first}") from exc
