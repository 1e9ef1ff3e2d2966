"""Target checks: one module per emulated runtime, each a ``Check`` found by name in a registry.

A target profile lists the checks it runs (``checks: [litert, tflm]``); the build runs them in that
order on the target's artifact and records each one's ``Section``. A check:

- has a ``name`` (what profiles write), a ``version`` (bump it when its output changes: it is part of
  the cache key), the ``tools`` whose versions its output depends on, and ``settings(target)``: the
  profile fields it reads (also part of the key);
- declares in ``provides`` the headline fields it is authoritative for (``metrics``, ``latency``,
  ``memory``, ``accelerator``, ``reload``, ``firmware``): the target's headline value of each is the
  one of the *last* check in the profile's list that provides it, even when that value is missing
  (an MCU whose tflite-micro run crashed has no metrics, not LiteRT's);
- ``run(ctx) -> Section``: its typed findings; files it writes go to ``ctx.workdir`` and are listed
  in ``Section.files``. A check that raises becomes a ``runtime`` failure of its target
  (``compat`` for a ``CompatibilityError``); the other targets still build.

Add a device kind with a module defining a ``Check`` subclass decorated with ``@register`` and a
profile naming it. Built-in checks are imported only when a profile uses them.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from toolchain.config import Target
from toolchain.errors import ConfigError
from toolchain.record import Section

if TYPE_CHECKING:
    import numpy as np

_BUILTIN = {
    "litert": "toolchain.checks.litert:LiteRTCheck",
    "tflm": "toolchain.checks.tflm:TflmCheck",
    "tflm-numerics": "toolchain.checks.tflm:TflmNumericsCheck",
    "vela": "toolchain.checks.vela:VelaCheck",
    "edgetpu": "toolchain.checks.edgetpu:EdgeTpuCheck",
    "gpu": "toolchain.checks.gpu:GpuCheck",
}
_registry: dict[str, type[Check]] = {}


@dataclass
class CheckContext:
    """What a check gets: the target, the artifact (in its target folder), the eval data, the float
    reference's outputs and the outputs of the checks that ran before it on this artifact."""

    target: Target
    artifact_path: Path
    xs_eval: list[np.ndarray]  # one array per model input
    y_eval: np.ndarray | None  # labels (None: the task has none)
    #: the float reference's outputs, one array per model output (None: no reference), or a function that returns
    #: them (run when a check first asks: a float .tflite's own outputs are computed only then)
    reference_of: object
    task: str = "classification"
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @property
    def reference(self) -> list[np.ndarray] | None:
        if callable(self.reference_of):
            self.reference_of = self.reference_of()
        return self.reference_of

    @property
    def x_eval(self) -> np.ndarray:
        """The first (for most models: the only) input's eval samples."""
        return self.xs_eval[0]

    def compare(self, outputs: list[np.ndarray], n: int | None = None):
        """The task's metrics and parity of ``outputs`` (on the first ``n`` eval samples)."""
        from toolchain.checks.metrics import compare

        n = n or len(outputs[0])
        ref = [r[:n] for r in self.reference] if self.reference is not None else None
        y = self.y_eval[:n] if self.y_eval is not None else None
        return compare(ref, outputs, y, self.task, first_input=self.xs_eval[0][:n])

    @property
    def workdir(self) -> Path:
        return self.artifact_path.parent

    @cached_property
    def artifact(self) -> bytes:
        return self.artifact_path.read_bytes()

    @cached_property
    def model(self):
        from toolchain.tflite_model import TFLiteModel

        return TFLiteModel(self.artifact, str(self.artifact_path))


class Check:
    """The protocol every target check implements (see the module docstring)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tools: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()

    def settings(self, target: Target) -> dict:
        """The profile fields the check reads (part of its cache key)."""
        return {}

    def run(self, ctx: CheckContext) -> Section:
        raise NotImplementedError

    def section(self, **fields) -> Section:
        """A ``Section`` of this check (name and ``provides`` filled in)."""
        return Section(check=self.name, provides=list(self.provides), **fields)


def with_margin(arena: int, margin: float) -> int:
    """An arena size with the target's safety margin, rounded up to 16 bytes."""
    return int(math.ceil(arena * (1 + margin) / 16) * 16)


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: make ``cls`` available to target profiles as ``cls.name``."""
    if not getattr(cls, "name", None) or not issubclass(cls, Check):
        raise TypeError(f"{cls!r} must subclass Check and set a name")
    _registry[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_registry))


def get(name: str) -> Check:
    """An instance of the check registered as ``name``."""
    if name not in _registry and name in _BUILTIN:
        module, cls = _BUILTIN[name].split(":")
        getattr(importlib.import_module(module), cls)  # the module registers it
    if name not in _registry:
        raise ConfigError(f"unknown check {name!r} (known: {', '.join(names())})")
    return _registry[name]()
