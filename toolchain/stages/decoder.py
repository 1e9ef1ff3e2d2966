"""A decoder language model's artifact: the float export with prefill and decode signatures and an explicit KV
cache (``models.decoder``), and its int8 from both signatures' calibration (``quantize.decoder``); cached."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from toolchain.cache import Stage
from toolchain.convert.plan import ConvertPlan
from toolchain.fsutil import capture_fds
from toolchain.stages.context import Build
from toolchain.stages.convert import Artifact, describe
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage

log = logging.getLogger(__name__)
EXPORT = Stage("decoder-export", 2, tools=("tensorflow",), timing="convert")
INT8 = Stage("decoder-int8", 2, tools=("ai-edge-quantizer", "ai-edge-litert"), timing="quantize")
#: calibration windows: each gives one prefill and context/2 decode steps
CALIBRATION_WINDOWS = 16


def _float(b: Build, model: ModelStage) -> tuple[bytes, Path]:
    def compute(tmp: Path):
        from toolchain.models.decoder import export

        log.info("convert: the decoder with prefill and decode signatures and its KV cache as tensors")
        with capture_fds(tmp / "convert.log"):
            blob = export(model.keras(), tmp)
        (tmp / "model.tflite").write_bytes(blob)
        return describe(blob), blob

    blob, entry = b.cache.run(EXPORT, {"model": model.key}, compute, lambda e: e.file("model.tflite").read_bytes())
    return blob, entry.dir / "convert.log"


def stage_decoder(b: Build, model: ModelStage, data: Data, plan: ConvertPlan) -> Artifact:
    blob, convert_log = _float(b, model)
    if plan.mode == "float32":
        return Artifact(blob, convert_log, **describe(blob))
    windows = min(CALIBRATION_WINDOWS, b.recipe.quantize.calibration_samples, data.sizes["calib"])
    mode = plan.mode
    sixteen = ("ALL_SUPPORTED",) if mode == "int16x8" else ()  # 16-bit activations and cache, 8-bit weights

    def compute(tmp: Path):
        from toolchain.quantize.decoder import quantize_decoder

        log.info(
            "quantize: %s decoder, both signatures calibrated on %d windows of the calibration text", mode, windows
        )
        with capture_fds(tmp / "convert.log"):
            q, report = quantize_decoder(blob, data.xs_calib[0][:windows], sixteen)
        (tmp / "model.tflite").write_bytes(q)
        return {"report": report, **describe(q)}, q

    inputs = {"float": hashlib.sha256(blob).hexdigest(), "data": data.digest, "windows": windows, "mode": mode}
    q, entry = b.cache.run(INT8, inputs, compute, lambda e: e.file("model.tflite").read_bytes())
    if entry.hit:
        log.info("quantize: %s decoder (cached)", mode)
    meta = entry.meta
    return Artifact(q, entry.dir / "convert.log", meta["gzip_bytes"], meta["ops"], meta["io"])
