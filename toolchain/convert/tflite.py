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

import numpy as np

from toolchain.convert.plan import ConvertPlan
from toolchain.errors import ConversionError
from toolchain.models.compat import tf

_IO_TYPES = {"int8": "int8", "uint8": "uint8", "int16": "int16", "float32": "float32"}
_VALID_IO = {
    "float32": {"float32"},
    "dynamic": {"float32"},
    "float16": {"float32"},
    "int8": {"int8", "uint8", "float32"},
    "int16x8": {"int16", "float32"},
}


def converter(model, batch: int | None, sample=None):
    """A TFLiteConverter over the model; its input names; whether it is traced with named inputs and outputs;
    and the route (``keras3``: the Keras model; ``trace``: a traced function). A single-input tf_keras model goes
    through its Keras 3 twin when ``sample`` shows it equal (``models.compat.keras3_twin``): the converter traces
    Keras 3 models about twice as fast."""
    t = tf()
    names = input_names(model)
    multi = len(model.inputs) > 1 or len(model.outputs) > 1 or hasattr(model, "signature")  # a SavedModel signature
    if not multi and not is_keras3(model) and sample is not None and len(sample):
        from toolchain.models.compat import keras3_twin

        model = keras3_twin(model, np.asarray(sample[:8], dtype=np.float32)) or model
    route = "keras3" if is_keras3(model) else "trace"
    if is_keras3(model):  # its variables stay unfrozen in a concrete function: the Keras route freezes them
        if multi:
            raise ConversionError(
                "a Keras 3 model with several inputs or outputs: save it with tf_keras (or as .tflite)"
            )
        import keras as keras3

        # named: Keras 3 names an unnamed input by a process-wide counter (keras_tensor_21 in one process, _72 in
        # another that built more models), and the artifact's input name and signature would differ by history
        inp = keras3.Input(batch_shape=(batch, *model.inputs[0].shape[1:]), name="input")
        conv = t.lite.TFLiteConverter.from_keras_model(keras3.Model(inp, model(inp)))
    elif not multi:
        spec = t.TensorSpec([batch, *model.inputs[0].shape[1:]], t.float32)
        fn = t.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        conv = t.lite.TFLiteConverter.from_concrete_functions([fn], model)
    else:  # named inputs and outputs: the converter orders them its own way, the signature keeps the names
        specs = [
            t.TensorSpec([batch, *i.shape[1:]], t.float32, name=n) for n, i in zip(names, model.inputs, strict=True)
        ]

        def call(*xs):
            out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
            return {f"out{k}": o for k, o in enumerate(out if isinstance(out, (list, tuple)) else [out])}

        fn = t.function(call).get_concrete_function(*specs)
        conv = t.lite.TFLiteConverter.from_concrete_functions([fn], getattr(model, "loaded", model))
    return conv, names, multi, route


def representative(xs: list[np.ndarray], names: list[str], multi: bool):
    """The converter's representative dataset: one sample per step (a list, or a dict by input name)."""

    def gen():
        for j in range(len(xs[0])):
            sample = [x[j][None].astype(np.float32) for x in xs]
            yield dict(zip(names, sample, strict=True)) if multi else sample

    return gen


def first_line(exc: Exception) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def convert(model, plan: ConvertPlan, calibration=None, sample=None) -> bytes:
    """Convert a Keras model with the converter's own calibration; ``calibration`` (float, preprocessed; an array,
    or one array per model input) is needed for int8 and int16x8; ``sample`` (float inputs) lets a tf_keras model
    convert through its Keras 3 twin. (int8 builds go through ``toolchain.quantize``; this is the route for the
    other modes and for QAT models, whose ranges are learnt.)"""
    t = tf()
    if plan.io_type not in _VALID_IO[plan.mode]:
        raise ConversionError(
            f"quantize.io_type: {plan.io_type!r} is not possible with mode {plan.mode!r} "
            f"(possible: {', '.join(sorted(_VALID_IO[plan.mode]))})"
        )
    conv, names, multi, _ = converter(model, plan.batch, sample)
    if plan.mode != "float32":
        conv.optimizations = [t.lite.Optimize.DEFAULT]
    if plan.mode == "float16":
        conv.target_spec.supported_types = [t.float16]
    if plan.mode in ("int8", "int16x8"):
        xs = list(calibration) if isinstance(calibration, (list, tuple)) else [calibration]
        if calibration is None or xs[0] is None or len(xs[0]) == 0:
            raise ConversionError(f"mode {plan.mode!r} needs calibration samples")

        conv.representative_dataset = representative(xs, names, multi)
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
        blob = conv.convert()
        return in_keras_order(blob, names, len(model.outputs)) if multi else blob
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError ...
        raise ConversionError(f"TFLite converter failed ({plan.mode}): {first_line(exc)}") from exc


def input_names(model) -> list[str]:
    names = getattr(model, "input_names", None) or [i.name for i in model.inputs]
    names = [n if n else f"input_{k}" for k, n in enumerate(names)]
    return [n.split(":")[0] for n in names]


def in_keras_order(blob: bytes, inputs: list[str], outputs: int) -> bytes:
    """The model with its subgraph's inputs and outputs in the Keras model's order (found through the signature)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    sig = m.signatureDefs[0]
    by_name = {
        (t.name.decode() if isinstance(t.name, bytes) else t.name): t.tensorIndex for t in sig.inputs + sig.outputs
    }
    sg = m.subgraphs[sig.subgraphIndex]
    sg.inputs = np.array([by_name[n] for n in inputs], dtype=np.int32)
    sg.outputs = np.array([by_name[f"out{k}"] for k in range(outputs)], dtype=np.int32)
    builder = flatbuffers.Builder(len(blob) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def is_keras3(model) -> bool:
    """A model loaded from a .keras file written by Keras 3 (the toolchain's own models are tf_keras)."""
    return not type(model).__module__.startswith("tf_keras") and not hasattr(model, "signature")
