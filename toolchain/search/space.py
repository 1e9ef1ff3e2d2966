"""The recipe's search space as Optuna distributions, and a trial's parameters back as recipe values."""

from __future__ import annotations

import json
from typing import Any

from toolchain.config.search import Range, SearchSpec

SCALARS = (type(None), bool, int, float, str)


def _encoded(values: list) -> bool:
    """Whether a list of values goes to Optuna as JSON text (it takes scalars only: a shape is a list)."""
    return not all(isinstance(v, SCALARS) for v in values)


def distributions(spec: SearchSpec) -> dict:
    """Recipe path -> Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for path, values in spec.space.items():
        if isinstance(values, Range):
            if values.integer:
                step = int(values.step or 1)
                out[path] = IntDistribution(int(values.low), int(values.high), step=step, log=values.log)
            else:
                out[path] = FloatDistribution(values.low, values.high, step=values.step, log=values.log)
        else:
            choices = [json.dumps(v) for v in values] if _encoded(values) else list(values)
            out[path] = CategoricalDistribution(choices)
    return out


def decode(spec: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as the recipe values they stand for, in the space's order."""
    out = {}
    for path, values in spec.space.items():
        value = params[path]
        if isinstance(values, list) and _encoded(values):
            value = json.loads(value)
        out[path] = value
    return out


def short(params: dict[str, Any]) -> str:
    """``alpha=0.35 input_shape=48x48x3 epochs=8``: the last part of each path, shapes with x."""

    def text(v):
        if isinstance(v, list) and all(isinstance(x, int) for x in v):
            return "x".join(map(str, v))
        return f"{v:g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list | dict) else str(v)

    return " ".join(f"{path.rsplit('.', 1)[-1]}={text(v)}" for path, v in params.items())
