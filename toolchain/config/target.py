"""Target device profiles: what a device accepts and what it has. Frozen data, no algorithms."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from toolchain.config.base import Strict
from toolchain.config.recipe import NAME_PATTERN, IOType, Mode


class Numerics(Strict):
    modes: list[Mode] = Field(min_length=1, description="quantize modes the device can run")
    default_mode: Mode
    io_types: list[IOType] = Field(min_length=1, description="input/output types accepted for integer models")
    default_io_type: IOType
    int16_ops: Literal["litert", "tflm", "vela-ethos-u55", "vela-ethos-u85"] | None = Field(
        None,
        description="the runtime whose measured 16-bit-activation kernels (toolchain/quantize/int16_ops.yaml) this "
        "device has, for quantize.int16_layers; unset: none (integer-8 only, like the Edge TPU)",
    )
    int4_ops: Literal["litert", "tflm"] | None = Field(
        None,
        description="the runtime whose measured 4-bit-weight kernels (toolchain/quantize/int4_ops.yaml) this device "
        "has, for quantize.int4_layers; unset: none (Vela 5.2.0 crashes on 4-bit weights; the Edge TPU is int8)",
    )

    @model_validator(mode="after")
    def _defaults_allowed(self):
        if self.default_mode not in self.modes:
            raise ValueError(f"default_mode {self.default_mode!r} is not in modes")
        if self.default_io_type not in self.io_types:
            raise ValueError(f"default_io_type {self.default_io_type!r} is not in io_types")
        return self


class Memory(Strict):
    ram_kb: float | None = Field(None, gt=0, description="RAM for the tensor arena and I/O")
    flash_kb: float | None = Field(None, gt=0, description="flash/storage for the model")
    arena_margin: float = Field(0.1, ge=0, description="safety margin added to the measured minimum arena")
    arena_kb: float | None = Field(
        None, gt=0, description="a fixed arena the firmware reserves: validate with it instead of the measured one"
    )


class OpCost(Strict):
    mac: float = Field(0.0, ge=0, description="cycles per multiply-accumulate")
    element: float = Field(0.0, ge=0, description="cycles per activation element read or written")
    op: float = Field(0.0, ge=0, description="cycles per op (dispatch, setup)")


OpKind = Literal["conv", "depthwise", "fully_connected", "pooling", "elementwise", "softmax", "copy"]


class McuCost(Strict):
    """cycles = Σ over ops of (mac·MACs + element·elements + op), per op kind: fitted to published measurements
    by tools/fit_mcu_cost.py, which also writes the error band every estimate reports."""

    kernels: str = Field(description="the kernels the coefficients assume, e.g. CMSIS-NN")
    family: str = Field(description="the core family the coefficients were fitted for")
    fitted: str | None = Field(None, description="date of the fit")
    measurements: int = Field(ge=0, description="published measurements the fit and its error rest on")
    error_pct: float | None = Field(None, ge=0, description="leave-one-model-out median |error|")
    max_error_pct: float | None = Field(None, ge=0, description="leave-one-model-out largest |error|")
    kinds: dict[OpKind, OpCost]


class Mcu(Strict):
    cycles_per_mac: float = Field(
        gt=0, description="average cycles per multiply-accumulate (CMSIS-NN int8): the estimate without a cost model"
    )
    cost: McuCost | None = Field(None, description="the per-op cost model; when set, it makes the estimate")
    eval_samples: int | None = Field(None, ge=1, description="eval samples run in tflite-micro (null: all)")


class Vela(Strict):
    accelerator_config: str
    system_config: str
    memory_mode: str


class EdgeTpu(Strict):
    param_cache_bytes: int = Field(8 * 1024 * 1024, description="on-chip parameter cache")
    tops: float = Field(4.0, gt=0, description="peak int8 tera-operations per second")
    utilization: float = Field(0.1, gt=0, le=1, description="assumed share of peak reached")
    invoke_overhead_ms: float = Field(0.3, ge=0, description="fixed cost of one inference (driver, USB round trip)")
    usb_mb_per_s: float = Field(320.0, gt=0, description="host link bandwidth for streamed parameters")
    cpu_gmacs: float = Field(2.0, gt=0, description="host CPU int8 GMAC/s for ops left on the CPU")
    utilization_by_kind: dict[Literal["conv", "depthwise", "fully_connected"], float] = Field(
        default_factory=dict,
        description="share of peak reached per op kind (fitted by tools/fit_edgetpu.py); a kind not listed "
        "takes `utilization`",
    )
    op_overhead_ms: float = Field(0.0, ge=0, description="fixed time per op on the TPU (fitted)")
    element_ms_per_m: float = Field(
        0.0, ge=0, description="time per million output elements of the TPU's non-MAC ops (adds, muls, pools, concats)"
    )
    error_pct: float | None = Field(None, ge=0, description="leave-one-model-out median |error| against Coral's table")
    max_error_pct: float | None = Field(None, ge=0)
    measurements: int = Field(0, ge=0, description="published latencies the fit rests on")


#: What the ``runtime`` field of early profiles meant, as check lists.
LEGACY_RUNTIMES = {
    "litert": ["litert"],
    "tflm": ["litert", "tflm"],
    "vela": ["litert", "tflm-numerics", "vela"],
    "edgetpu": ["litert", "edgetpu"],
}


class Target(Strict):
    schema_version: Literal[1]
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["phone", "mcu", "npu", "tpu"]
    description: str
    checks: list[str] = Field(
        min_length=1,
        description="the checks run on the artifact, in order (see toolchain.checks); "
        "a headline value (metrics, latency, memory ...) comes from the last check that provides it",
    )
    batch: int | None = Field(
        None, ge=1, le=1024, description="fixed batch size (a device runs 1); null keeps the batch axis dynamic"
    )
    numerics: Numerics
    memory: Memory = Memory()
    clock_mhz: float | None = Field(None, gt=0)
    threads: int = Field(1, ge=1, le=1024, description="interpreter threads used for host latency")
    mcu: Mcu | None = None
    vela: Vela | None = None
    edgetpu: EdgeTpu | None = None

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data):
        """Profiles written before ``checks`` existed: ``runtime`` (+ ``gpu_delegate``) name the checks;
        ``numerics.float_fallback`` meant nothing and is dropped."""
        if isinstance(data, dict) and "runtime" in data and "checks" not in data:
            data = dict(data)
            checks = list(LEGACY_RUNTIMES.get(data.pop("runtime"), []))
            if data.pop("gpu_delegate", False):
                checks.append("gpu")
            data["checks"] = checks
        if isinstance(data, dict) and isinstance(data.get("numerics"), dict) and "float_fallback" in data["numerics"]:
            data = {**data, "numerics": {k: v for k, v in data["numerics"].items() if k != "float_fallback"}}
        return data
