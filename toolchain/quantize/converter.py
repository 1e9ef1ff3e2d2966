"""The one module that uses the TFLite converter's private quantization API.

- ``calibration_graph``: a conversion with ``_experimental_calibrate_only`` returns the float graph the converter
  would quantize, each tensor to quantize carrying a min/max slot (filled here from one sample; the toolchain
  overwrites every slot).
- ``quantize_graph``: ``tensorflow.lite.python.convert.mlir_quantize`` turns a graph with ranges into the int8
  model, for an I/O type, exactly as ``converter.convert()`` does after its own calibration (then the same
  read-only buffer deduplication). It takes about 0.1 s, so every I/O type and batch form of a target comes from
  one traced and calibrated graph.

These are the calls ``TFLiteConverterBaseV2._quantize`` makes (tensorflow/lite/python/lite.py, TF 2.21); a test
checks that the route gives the converter's own int8 model, tensor for tensor, when fed the converter's ranges.
"""

from __future__ import annotations

import numpy as np

from toolchain.convert.tflite import converter, first_line, in_keras_order, representative
from toolchain.errors import ConversionError
from toolchain.models.compat import tf
from toolchain.quantize.graph import Graph


def calibration_graph(model, xs: list[np.ndarray], batch: int | None = None) -> tuple[bytes, str]:
    """The float graph with calibration slots, traced with the given batch axis; and the route taken
    (``keras3`` twin or ``tf_keras``/saved-model trace)."""
    t = tf()
    conv, names, multi, route = converter(model, batch, xs[0])
    conv.optimizations = [t.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative([x[:1] for x in xs], names, multi)
    conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv._experimental_calibrate_only = True
    try:
        blob = bytes(conv.convert())
    except Exception as exc:  # ConverterError, ValueError, RuntimeError ...
        raise ConversionError(f"TFLite converter failed (int8 calibration graph): {first_line(exc)}") from exc
    if multi:
        blob = in_keras_order(blob, names, len(model.outputs))
    g = Graph(blob)
    g.compact_names()
    return g.to_bytes(), route


def quantize_graph(graph: bytes, io_type: str, per_channel: bool, float_nodes: list[str] | None = None) -> bytes:
    """The int8 model from a graph whose slots hold the ranges; ``io_type`` int8, uint8 or float32;
    ``float_nodes`` (op output tensor names) stay in float (``denylisted_nodes``)."""
    t = tf()
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import lite as tf_lite

    io = getattr(t, io_type)
    try:
        blob = tf_convert.mlir_quantize(
            graph,
            disable_per_channel=not per_channel,
            input_data_type=io,
            output_data_type=io,
            denylisted_nodes=float_nodes or None,
        )
        return bytes(tf_lite._deduplicate_readonly_buffers(blob))
    except Exception as exc:
        raise ConversionError(f"TFLite quantizer failed (int8, I/O {io_type}): {first_line(exc)}") from exc


def debug_graph(graph: bytes, per_channel: bool, accumulated: bool) -> bytes:
    """The int8 model with a NumericVerify op after every quantized op (float I/O), as TensorFlow's
    QuantizationDebugger builds it: each compares the op's dequantized int8 output with the float op run on the
    same input (``accumulated=False``: the layer's own error) or on the float model's own input
    (``accumulated=True``: the error of everything up to and including the layer)."""
    t = tf()
    from tensorflow.lite.python import convert as tf_convert

    try:
        return bytes(
            tf_convert.mlir_quantize(
                graph,
                disable_per_channel=not per_channel,
                input_data_type=t.float32,
                output_data_type=t.float32,
                enable_numeric_verify=True,
                enable_whole_model_verify=accumulated,
            )
        )
    except Exception as exc:
        raise ConversionError(f"TFLite quantizer failed (debug model): {first_line(exc)}") from exc
