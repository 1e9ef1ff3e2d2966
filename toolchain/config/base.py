"""The base of every recipe and profile model: unknown keys refused, frozen, no NaN or infinity."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
