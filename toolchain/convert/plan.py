"""What a conversion makes: the plan's numerics (no TensorFlow here: plans are resolved before any work)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ConvertPlan:
    mode: str
    io_type: str = "float32"
    per_channel: bool = True
    batch: int | None = None  # None keeps the batch axis dynamic
    int16_ops: str | None = None  # the table of ops the target runs with 16-bit activations (quantize.int16_layers)
    int4_ops: str | None = None  # the table of ops the target runs with 4-bit weights (quantize.int4_layers)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("int16_ops", "int4_ops")}
