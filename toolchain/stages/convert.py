"""The convert stage: the TFLite converter for one plan (float32, dynamic, float16, int16x8, and int8 for a QAT
model), cached; what the record says of any artifact (``describe``). The converter's output goes to a log.
Plans are resolved in ``stages.plan``; the toolchain's own int8 calibration is ``stages.quantize``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from toolchain.cache import Stage
from toolchain.convert.plan import ConvertPlan
from toolchain.fsutil import capture_fds
from toolchain.stages.context import Build
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage

log = logging.getLogger(__name__)
STAGE = Stage("convert", 5, tools=("tensorflow",))


@dataclass
class Artifact:
    blob: bytes
    log: Path | None  # the converter's output
    gzip_bytes: int  # size gzip'd: what unstructured zeros (pruning) save in storage
    ops: dict[str, int]  # operator counts
    io: dict  # input/output tensors: name, shape, dtype, scale, zero point
    quantization: dict | None = None  # the toolchain's calibration: method, ranges clipped (int8 plans)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()


def stage_convert(b: Build, model: ModelStage, data: Data, plan: ConvertPlan) -> Artifact:
    """The TFLite converter's artifact for ``plan`` (int8 here only for a QAT model: its ranges are learnt)."""
    quantized = plan.mode in ("int8", "int16x8")
    n_cal = min(b.recipe.quantize.calibration_samples, data.sizes["calib"]) if quantized else 0
    inputs = {"model": model.key, "plan": plan.as_dict(), "calibration": n_cal, "data": data.digest}

    def compute(tmp: Path):
        from toolchain.convert.tflite import convert

        log.info(
            "convert: %s, I/O %s, batch %s%s",
            plan.mode,
            plan.io_type,
            plan.batch or "dynamic",
            f", calibrating on {n_cal} samples" if quantized else "",
        )
        with capture_fds(tmp / "convert.log"):
            blob = convert(model.keras(), plan, [x[:n_cal] for x in data.xs_calib], data.xs_calib[0][:8])
        (tmp / "model.tflite").write_bytes(blob)
        return {"plan": plan.as_dict(), **describe(blob)}, blob

    blob, entry = b.cache.run(STAGE, inputs, compute, lambda entry: entry.file("model.tflite").read_bytes())
    if entry.hit:
        log.info("convert: %s (cached)", plan.mode)
    meta = entry.meta if entry.hit else describe(blob)
    return Artifact(blob, entry.dir / "convert.log", meta["gzip_bytes"], meta["ops"], meta["io"])


def float_artifact(b: Build, model: ModelStage, plan: ConvertPlan) -> Artifact:
    """A flatbuffer model's float32 artifact: its float graph, with the target's batch where it has a dynamic one."""
    blob = model.float_blob
    if plan.batch is not None:
        from toolchain.errors import CompatibilityError
        from toolchain.quantize.graph import Graph

        g = Graph(blob)
        if not g.fix_batch(plan.batch) or g.batch() != plan.batch:
            raise CompatibilityError(
                f"{b.recipe.line_of('model', 'file')}: model.file: {b.recipe.model.file.name} has batch "
                f"{g.batch()} fixed in its graph; the target wants batch {plan.batch}"
            )
        blob = g.to_bytes()
    log.info("convert: none, float32 is the model's own float graph (batch %s)", plan.batch or "as in the model")
    return Artifact(blob, None, **describe(blob))


def describe(blob: bytes) -> dict:
    """What the record says of an artifact, computed once per artifact (parsing a flatbuffer is not free)."""
    from toolchain.tflite_model import TFLiteModel

    m = TFLiteModel(blob)

    def tensor(i: int) -> dict:
        t = m.tensors[i]
        return {
            "name": t.name,
            "shape": t.shape_signature,
            "dtype": t.dtype,
            "scale": t.scales[0] if t.scales else 0.0,
            "zero_point": t.zero_points[0] if t.zero_points else 0,
        }

    io = {"input": tensor(m.inputs[0]), "output": tensor(m.outputs[0])}
    if len(m.inputs) > 1 or len(m.outputs) > 1:
        io |= {"inputs": [tensor(i) for i in m.inputs], "outputs": [tensor(i) for i in m.outputs]}
    return {"gzip_bytes": len(gzip.compress(blob, mtime=0)), "ops": m.op_counts(), "io": io}
