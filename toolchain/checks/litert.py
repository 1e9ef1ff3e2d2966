"""The LiteRT interpreter (ai-edge-litert, XNNPACK): run an artifact, time it, list its ops."""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING

from toolchain.checks import Check, CheckContext, register
from toolchain.errors import RuntimeValidationError
from toolchain.record import Latency, Memory, Reload, Section

if TYPE_CHECKING:
    import numpy as np


def quantize(x: np.ndarray, dtype, scale: float, zero: int) -> np.ndarray:
    import numpy as np

    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize(y: np.ndarray, scale: float, zero: int) -> np.ndarray:
    import numpy as np

    if np.issubdtype(y.dtype, np.integer):
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


class LiteRT:
    """One interpreter over an artifact; inputs and outputs in the model's order, one sample per invoke."""

    def __init__(self, model: bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        from toolchain.tflite_model import TFLiteModel

        self.model = TFLiteModel(model)
        try:
            self.interp = Interpreter(model_content=model, num_threads=threads)
            for d in self.interp.get_input_details():
                if len(d["shape_signature"]) and d["shape_signature"][0] == -1:
                    self.interp.resize_tensor_input(d["index"], [1, *d["shape"][1:]])
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeValidationError(f"LiteRT cannot load the artifact: {exc}") from None
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()

    def _set(self, sample: list[np.ndarray]) -> None:
        for d, x in zip(self.inputs, sample, strict=True):
            self.interp.set_tensor(d["index"], quantize(x[None], d["dtype"], *d["quantization"]))

    def predict(self, xs) -> list[np.ndarray]:
        """Float outputs (dequantized), one array per model output, for float inputs (one array per input)."""
        import numpy as np

        xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
        if len(xs) != len(self.inputs):
            raise RuntimeValidationError(f"the artifact has {len(self.inputs)} inputs; the data has {len(xs)}")
        outs = [[] for _ in self.outputs]
        try:
            for j in range(len(xs[0])):
                self._set([x[j] for x in xs])
                self.interp.invoke()
                for k, d in enumerate(self.outputs):
                    outs[k].append(dequantize(self.interp.get_tensor(d["index"]), *d["quantization"])[0])
        except (ValueError, RuntimeError) as exc:
            raise RuntimeValidationError(f"LiteRT failed to run the artifact: {exc}") from None
        return [np.stack(o) for o in outs]

    def latency_ms(self, xs, runs: int = 50, warmup: int = 5) -> dict:
        import numpy as np

        xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
        self._set([x[0] for x in xs])
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
        """The first input's and output's shape, dtype and quantization."""
        import numpy as np

        def desc(d):
            scale, zero = d["quantization"]
            shape = [int(s) for s in d["shape_signature"]]
            return {"shape": shape, "dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}

        return {"input": desc(self.inputs[0]), "output": desc(self.outputs[0])}


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def measured(ctx: CheckContext, source: str, *, median: float, p90: float, runs: int) -> Latency:
    """A host measurement today, its median the headline."""
    return Latency(
        ms=median,
        kind="measured",
        source=source,
        threads=ctx.target.threads,
        measured_at=today(),
        median=median,
        p90=p90,
        runs=runs,
    )


@register
class LiteRTCheck(Check):
    """Host numerics and latency on the LiteRT interpreter (XNNPACK), the runtime phones use."""

    name = "litert"
    version = 3
    tools = ("ai-edge-litert",)
    provides = ("metrics", "latency", "reload", "memory")  # memory: a language model's KV cache (none otherwise)

    def settings(self, target) -> dict:
        return {"threads": target.threads, "ram_kb": target.memory.ram_kb}

    def run(self, ctx: CheckContext) -> Section:
        if ctx.task == "language_model":
            return self._decoder(ctx)
        lite = LiteRT(ctx.artifact, threads=ctx.target.threads)
        ctx.outputs[self.name] = out = lite.predict(ctx.xs_eval)
        return self.section(
            runtime="ai-edge-litert",
            metrics=ctx.compare(out),
            latency=measured(ctx, "measured: host LiteRT/XNNPACK", **lite.latency_ms(ctx.xs_eval)),
            reload=Reload(runtime="litert"),
        )

    def _decoder(self, ctx: CheckContext) -> Section:
        """Prefill, then decode step by step (``checks.decoder``): perplexity and next-token agreement against the
        float model's logits, the time of a decode step, and the KV cache against the RAM."""
        from toolchain.checks.decoder import kv_cache, max_context, run

        logits, timing = run(ctx.artifact, ctx.x_eval, ctx.target.threads)
        ctx.outputs[self.name] = [logits]
        cache = kv_cache(ctx.artifact)
        ram = ctx.target.memory.ram_kb * 1024 if ctx.target.memory.ram_kb is not None else None
        fits = max_context(cache, ram, len(ctx.artifact))
        latency = measured(
            ctx,
            "measured: host LiteRT/XNNPACK, one decode step (a token)",
            median=timing["decode_ms"],
            p90=timing["decode_p90_ms"],
            runs=timing["decode_steps"],
        )
        memory = Memory(
            ram_bytes=cache["bytes"] + len(ctx.artifact),
            flash_bytes=len(ctx.artifact),
            details={
                "kv_cache_bytes": cache["bytes"],
                "kv_cache_bytes_per_token": cache["bytes_per_token"],
                "context": cache["context"],
                "max_context": fits,
            },
        )
        return self.section(
            runtime="ai-edge-litert",
            metrics=ctx.compare([logits]),
            latency=latency,
            memory=memory,
            reload=Reload(runtime="litert"),
            details={"kv_cache": cache, **timing},
        )
