"""The typed build record: what a build measured, per target, and the one loader every reader uses.

``toolchain.build/2`` is written; ``/1`` records (PR 1-6 era: dict sections, failures as strings) are
migrated on load. ``python -m toolchain.record`` prints the JSON Schema (``docs/build-record.schema.json``).
Imports nothing heavy: reports, ``compare`` and ``package`` read records without TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolchain.errors import FAILURE_KINDS, InputError

SCHEMA = "toolchain.build/2"
FailureKind = Literal["fit", "compat", "nonfinite", "runtime", "gate"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Failure(Model):
    """One reason a target did not pass. ``kind`` decides the exit code (see ``errors.FAILURE_KINDS``)."""

    kind: FailureKind
    check: str = Field(description="the check or gate that failed (e.g. 'tflm', 'max_accuracy_drop', 'fit')")
    message: str

    def __str__(self) -> str:
        return self.message


#: The headline metric of each task: (field, higher is better). ``none`` has no labels: SNR against the reference.
TASK_METRIC = {
    "classification": ("top1", True),
    "regression": ("mae", False),
    "anomaly": ("auc", True),
    "none": ("snr_db", True),
    "language_model": ("perplexity", False),
}


class Metrics(Model):
    """An artifact's outputs against the labels (by task) and against the float reference's outputs (dequantized).

    Parity fields (``cosine`` ... ``outputs``) are None without a reference; ``reference_*`` are the reference's own
    task metrics on the same samples."""

    task: str = "classification"
    samples: int
    top1: float | None = None
    reference_top1: float | None = Field(None, description="the float reference's top-1 on the same samples")
    top1_agreement: float | None = None
    top5: float | None = None
    per_class: list[float | None] | None = None
    confusion: list[list[int]] | None = None
    mae: float | None = None
    reference_mae: float | None = None
    rmse_labels: float | None = None
    r2: float | None = None
    reference_r2: float | None = None
    auc: float | None = None
    reference_auc: float | None = None
    mean_error: float | None = Field(None, description="anomaly: mean reconstruction error (MSE per sample)")
    perplexity: float | None = Field(None, description="language_model: of the eval text's next tokens")
    reference_perplexity: float | None = None
    cosine: float | None = None
    rmse: float | None = None
    max_abs: float | None = None
    snr_db: float | None = Field(None, description="the lowest SNR of any output against the reference, dB")
    outputs: list[dict[str, Any]] = Field(default_factory=list, description="parity of each output")

    @property
    def headline(self) -> tuple[str, float | None, float | None, bool]:
        """(name, value, the reference's value, higher is better) of the task's headline metric."""
        name, higher = TASK_METRIC.get(self.task, ("top1", True))
        return name, getattr(self, name), getattr(self, f"reference_{name}", None), higher

    @property
    def drop(self) -> float | None:
        """How much worse than the reference the headline metric is (in its units; positive = worse)."""
        _, value, ref, higher = self.headline
        if value is None or ref is None:
            return None
        return (ref - value) if higher else (value - ref)


class Latency(Model):
    ms: float | None = Field(description="the headline figure: the host median when measured, else the estimate")
    kind: Literal["measured", "estimate"]
    source: str
    error_pct: float | None = Field(
        None, description="an estimate's typical error (median |error| against published measurements), when known"
    )
    median: float | None = None
    p90: float | None = None
    runs: int | None = None
    threads: int | None = None
    measured_at: str | None = Field(None, description="UTC date of the run that measured it (kept in the cache)")


class Memory(Model):
    ram_bytes: int | None = None
    flash_bytes: int | None = None
    arena_bytes: int | None = Field(None, description="tflite-micro: the minimum arena found by bisection")
    details: dict[str, Any] = Field(default_factory=dict)


class Accelerator(Model):
    name: str
    ops_on: int
    ops_total: int

    @property
    def share(self) -> float:
        return self.ops_on / max(1, self.ops_total)


class Reload(Model):
    """How ``toolchain verify`` proves the packaged artifact loads: the runtime and its arena."""

    runtime: Literal["litert", "tflite-micro"]
    arena_bytes: int | None = None


class Firmware(Model):
    """C sources to write for this target: which model file (in the target folder) and the arena it needs."""

    model_file: str
    arena_bytes: int


class Headline(Model):
    """The fields a check can supply and a target shows: one rule picks each target's from its checks' sections."""

    runtime: str | None = Field(None, description="the runtime whose numerics ``metrics`` are")
    metrics: Metrics | None = None
    latency: Latency | None = None
    memory: Memory | None = None
    accelerator: Accelerator | None = None
    reload: Reload | None = None
    firmware: Firmware | None = None


class Section(Headline):
    """What one check found. ``provides`` names the headline fields the check is authoritative for."""

    check: str
    provides: list[str] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list, description="files the check wrote into the target folder")
    details: dict[str, Any] = Field(default_factory=dict)


#: The headline fields a section can supply, in the order reports show them.
HEADLINE = ("metrics", "latency", "memory", "accelerator", "reload", "firmware")


class ClippedTensor(Model):
    tensor: str
    range: list[float] = Field(description="the quantization range [lo, hi]")
    observed: list[float] = Field(description="the calibration values' min and max")
    clipped: float = Field(description="share of calibration values outside the range")


class Quantization(Model):
    """How the toolchain chose an int8 artifact's activation ranges (``toolchain.quantize``)."""

    method: str = Field(description="minmax, mean_minmax, percentile, kl or mse")
    percentile: float | None = None
    activations: Literal["asymmetric", "symmetric"]
    samples: int = Field(description="calibration samples")
    tensors: int = Field(description="activation tensors given a range")
    clipped_tensors: int = Field(description="tensors with calibration values outside their range")
    clipped_share_max: float
    clipped_share_mean: float
    utilisation_mean: float = Field(description="mean share of each tensor's grid its calibration values span")
    most_clipped: list[ClippedTensor] = Field(default_factory=list)
    inputs: list[dict[str, Any]] = Field(
        default_factory=list,
        description="per model input: its range, int8 scale, the calibration values' min/max and the share clipped",
    )
    guarded: list[ClippedTensor] = Field(
        default_factory=list,
        description="tensors whose kl/percentile/mse range would have clipped more than quantize.max_clipped: the "
        "range it would have been and its clipped share; minmax was kept",
    )
    equalization: dict[str, Any] | None = None
    calibration_drift: list[dict[str, Any]] = Field(
        default_factory=list,
        description="inputs whose calibration range is set by samples far outside the training data's: ranges, "
        "the samples responsible, the effect on the input's scale, whether they were dropped",
    )
    smoothing: dict[str, Any] | None = None  # SmoothQuant: alpha and, per layer, the channel range before/after
    bias_correction: dict[str, Any] | None = None
    route: str = Field(description="keras3: traced from the model's Keras 3 twin; trace: from the model itself")
    float_ops: list[str] = Field(default_factory=list, description="op outputs kept in float (quantize.float_layers)")
    int16_ops: list[str] = Field(
        default_factory=list, description="op outputs with 16-bit activations (quantize.int16_layers)"
    )
    int4_ops: list[str] = Field(
        default_factory=list, description="op outputs whose ops have 4-bit weights (quantize.int4_layers)"
    )
    int4_selection: dict[str, Any] | None = Field(
        None,
        description="quantize.int4_select: per candidate its bytes saved and output SNR alone, the calibration top-1 "
        "with it added (least sensitive first) and whether it was kept",
    )
    int8_bytes: int | None = Field(
        None, description="with float, 16-bit or 4-bit exceptions: the size of the same plan with every op int8"
    )
    traced_batch: int | None = Field(None, description="set when this batch needed its own trace")
    optimization: dict[str, Any] | None = Field(
        None,
        description="calibration eq or rounding adaround / admm: per layer the output error before (nearest) and "
        "after, eq's input range share and weights clipped, the seconds it took",
    )


class TargetResult(Headline):
    target: str
    kind: str
    mode: str
    io_type: str
    per_channel: bool
    batch: int | None
    checks: list[str]
    artifact: str
    sha256: str
    size_bytes: int
    size_gzip_bytes: int | None = None
    ops: dict[str, int] = Field(default_factory=dict)
    io: dict[str, Any] = Field(default_factory=dict)
    quantization: Quantization | None = None
    plan_search: list[dict[str, Any]] | None = Field(
        None, description="quantize.mode auto: every plan tried, cheapest first, with its numbers and gate result"
    )
    sections: dict[str, Section] = Field(default_factory=dict)
    budget: dict[str, int | None] = Field(default_factory=dict, description="ram_bytes / flash_bytes the target has")
    failures: list[Failure] = Field(default_factory=list)
    passed: bool

    @property
    def fits(self) -> bool:
        return not any(f.kind == "fit" for f in self.failures)

    @property
    def reference_top1(self) -> float | None:
        return self.metrics.reference_top1 if self.metrics else None


class BuildRecord(Model):
    schema_: Literal["toolchain.build/2"] = Field(SCHEMA, alias="schema")
    recipe: str
    recipe_file: str | None = None
    recipe_sha256: str | None = None
    data_digest: str
    eval_samples: int
    labels: list[str] = Field(default_factory=list)
    tool_versions: dict[str, str]
    timings_s: dict[str, float] = Field(default_factory=dict)
    passed: bool
    compression: list[dict[str, Any]] = Field(default_factory=list)
    results: list[TargetResult]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def result(self, target: str) -> TargetResult:
        return next(r for r in self.results if r.target == target)

    @property
    def identity(self) -> dict:
        """What makes it the build it is (see ``same_build``)."""
        return {k: getattr(self, k) for k in IDENTITY}

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)

    def failure_error(self):
        """The error to exit with (its class picked by the most basic failure kind), or None."""
        failed = [(r.target, f) for r in self.results for f in r.failures]
        if not failed:
            return None
        more = f" (+{len(failed) - 1} more, see report.md)" if len(failed) > 1 else ""
        for kind, error in FAILURE_KINDS.items():
            hit = next(((t, f) for t, f in failed if f.kind == kind), None)
            if hit:
                target, f = hit
                return error(f"gate failed: {target}: {f.message}{more}" if kind == "gate" else f"{f.message}{more}")
        return None


#: THE rule for "the same build": a record made from the same recipe (name and text), data and tool versions.
#: Only such a record is extended by a new build, reused instead of building, or keeps its other targets.
IDENTITY = ("recipe", "recipe_sha256", "data_digest", "tool_versions")


def identity(recipe: str, recipe_sha256: str | None, data_digest: str, tool_versions: dict) -> dict:
    """The identity of a build about to be made (what ``BuildRecord.identity`` will say)."""
    return dict(zip(IDENTITY, (recipe, recipe_sha256, data_digest, tool_versions), strict=True))


def same_build(record: BuildRecord | None, identity: dict) -> bool:
    """Whether ``record`` was made from the build ``identity`` names (``BuildRecord.identity``'s keys)."""
    return record is not None and all(getattr(record, k) == identity[k] for k in IDENTITY)


def merge(previous: BuildRecord | None, new: BuildRecord) -> BuildRecord:
    """What ``build.json`` holds after a build: ``new``'s targets plus those of ``previous`` it did not rebuild,
    when both are the same build (``same_build``; else ``new`` alone)."""
    if not same_build(previous, new.identity):
        return new
    rebuilt = {r.target: r for r in new.results}
    results = [rebuilt.pop(r.target, r) for r in previous.results] + list(rebuilt.values())
    return new.model_copy(update={"results": results, "passed": all(r.passed for r in results)})


# --- loading and migration ---------------------------------------------------------------------


def _kind_of_v1(message: str) -> tuple[str, str]:
    for prefix, kind, check in (
        ("does not fit", "fit", "fit"),
        ("edgetpu:", "compat", "edgetpu"),
        ("gpu:", "compat", "gpu"),
        ("tflite-micro:", "runtime", "tflm"),
    ):
        if message.startswith(prefix):
            return kind, check
    return "gate", message.split(":")[0]


_V1_KEPT = ("target", "kind", "mode", "io_type", "per_channel", "batch", "artifact", "sha256", "size_bytes", "passed")
_V1_TOP = ("recipe", "data_digest", "eval_samples", "tool_versions", "passed")


def _latency_v1(lat: dict) -> dict | None:
    if not lat:
        return None
    measured = "median" in lat
    kind, ms = ("measured", lat["median"]) if measured else ("estimate", lat.get("estimate"))
    return {
        "ms": ms,
        "kind": kind,
        "source": lat.get("source", ""),
        **{k: lat.get(k) for k in ("median", "p90", "runs", "threads")},
    }


def _accelerator_v1(t: dict) -> tuple[str, dict, dict] | None:
    """(check, accelerator, details) of a /1 result's npu, edgetpu or gpu section."""
    if t.get("npu"):
        n = t["npu"]
        return "vela", {"name": "Ethos-U (Vela)", "ops_on": n["npu_ops"], "ops_total": n["npu_ops"] + n["cpu_ops"]}, n
    if t.get("edgetpu"):
        e = t["edgetpu"]
        return (
            "edgetpu",
            {"name": "Edge TPU", "ops_on": e["ops_on_tpu"], "ops_total": e["ops_on_tpu"] + e["ops_on_cpu"]},
            e,
        )
    if t.get("gpu"):
        total = sum(t.get("ops", {}).values())
        on = total - len(t["gpu"]["incompatible_ops"])
        return "gpu", {"name": "GPU delegate", "ops_on": on, "ops_total": total}, t["gpu"]
    return None


def migrate_v1(r: dict) -> dict:
    """A ``toolchain.build/1`` record in the ``/2`` shape (sections rebuilt from the flat keys)."""
    results = []
    for t in r["results"]:
        m, mem, ref = t.get("metrics"), t.get("memory"), (t.get("reference") or {}).get("top1")
        new = {k: t[k] for k in _V1_KEPT}
        new |= {
            "size_gzip_bytes": t.get("size_gzip_bytes"),
            "ops": t.get("ops", {}),
            "io": t.get("io", {}),
            "checks": [],
        }
        new |= {"runtime": t.get("runtime"), "metrics": {**m, "reference_top1": ref} if m else None}
        new["latency"] = _latency_v1(t.get("latency_ms") or {})
        new["failures"] = [
            {"kind": _kind_of_v1(f)[0], "check": _kind_of_v1(f)[1], "message": f} for f in t.get("failures", [])
        ]
        if mem:
            keys = ("ram_bytes", "flash_bytes", "arena_bytes")
            new["memory"] = {**{k: mem.get(k) for k in keys}, "details": mem}
        if t.get("npu"):
            n = t["npu"]
            new["memory"] = {"ram_bytes": n["sram_bytes"], "flash_bytes": n["flash_bytes"] + n["dram_bytes"]}
        accelerator = _accelerator_v1(t)
        if accelerator:
            check, new["accelerator"], details = accelerator
            new["sections"] = {check: {"check": check, "details": details}}
        results.append(new)
    optional = {k: r[k] for k in ("recipe_file", "recipe_sha256", "labels", "timings_s", "compression") if k in r}
    return {"schema": SCHEMA, **{k: r[k] for k in _V1_TOP}, **optional, "results": results}


MIGRATIONS = {"toolchain.build/1": migrate_v1}


def parse_record(data: dict, where: str = "build record") -> BuildRecord:
    """Validate a record dict of any known schema version, migrating old ones."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: not a build record (a JSON object is expected)")
    schema = data.get("schema")
    try:
        if schema in MIGRATIONS:
            data = MIGRATIONS[schema](data)
        elif schema != SCHEMA:
            raise InputError(
                f"{where}: unknown record schema {schema!r} (this toolchain reads {SCHEMA} and {', '.join(MIGRATIONS)})"
            )
        return BuildRecord.model_validate(data)
    except (KeyError, TypeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if not isinstance(exc, KeyError) else f"missing key {exc}"
        raise InputError(f"{where}: malformed build record: {first}") from None


def load_record(path: str | Path) -> BuildRecord:
    """Read ``build.json`` (or a build folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "build.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no build record here") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the build record: {exc}") from None
    return parse_record(data, str(path))


def json_schema() -> str:
    return json.dumps(BuildRecord.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(json_schema(), end="")
