"""The LiteRT interpreter (ai-edge-litert, XNNPACK): run an artifact, time it, list its ops."""

from __future__ import annotations

import datetime
import time

import numpy as np

from toolchain.checks import Check, CheckContext, register
from toolchain.checks.metrics import compare
from toolchain.errors import RuntimeValidationError
from toolchain.record import Latency, Reload, Section
from toolchain.tflite_model import TFLiteModel


class LiteRT:
    def __init__(self, model: bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.model = TFLiteModel(model)

        try:
            self.interp = Interpreter(model_content=model, num_threads=threads)
            inp = self.interp.get_input_details()[0]
            if len(inp["shape_signature"]) and inp["shape_signature"][0] == -1:
                self.interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeValidationError(f"LiteRT cannot load the artifact: {exc}") from None
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        return x.astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if np.issubdtype(self.output["dtype"], np.integer):
            scale, zero = self.output["quantization"]
            return (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float outputs (dequantized) for float, preprocessed inputs, one sample per invoke."""
        outs = []
        try:
            for sample in x:
                self.interp.set_tensor(self.input["index"], self._quantize(sample[None]))
                self.interp.invoke()
                outs.append(self._dequantize(self.interp.get_tensor(self.output["index"]))[0])
        except (ValueError, RuntimeError) as exc:
            raise RuntimeValidationError(f"LiteRT failed to run the artifact: {exc}") from None
        return np.stack(outs)

    def latency_ms(self, sample: np.ndarray, runs: int = 50, warmup: int = 5) -> dict:
        self.interp.set_tensor(self.input["index"], self._quantize(sample[None]))
        for _ in range(warmup):
            self.interp.invoke()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.interp.invoke()
            times.append((time.perf_counter() - t0) * 1e3)
        return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)), "runs": runs}

    def ops(self) -> dict[str, int]:
        """Op counts of the model itself (the interpreter's list adds XNNPACK's DELEGATE nodes)."""
        return self.model.op_counts()

    def io(self) -> dict:
        def desc(d):
            scale, zero = d["quantization"]
            return {
                "shape": [int(s) for s in d["shape_signature"]],
                "dtype": np.dtype(d["dtype"]).name,
                "scale": float(scale),
                "zero_point": int(zero),
            }

        return {"input": desc(self.input), "output": desc(self.output)}


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


@register
class LiteRTCheck(Check):
    """Host numerics and latency on the LiteRT interpreter (XNNPACK), the runtime phones use."""

    name = "litert"
    tools = ("ai-edge-litert",)
    provides = ("metrics", "latency", "reload")

    def settings(self, target) -> dict:
        return {"threads": target.threads}

    def run(self, ctx: CheckContext) -> Section:
        lite = LiteRT(ctx.artifact, threads=ctx.target.threads)
        ctx.outputs[self.name] = out = lite.predict(ctx.x_eval)
        lat = lite.latency_ms(ctx.x_eval[0])
        latency = Latency(
            ms=lat["median"],
            kind="measured",
            source="measured: host LiteRT/XNNPACK",
            threads=ctx.target.threads,
            measured_at=today(),
            **lat,
        )
        return self.section(
            runtime="ai-edge-litert",
            metrics=compare(ctx.reference, out, ctx.y_eval),
            latency=latency,
            reload=Reload(runtime="litert"),
        )
