"""What the stages share: the recipe, where the build goes, the cache (with its timings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolchain.cache import Cache
from toolchain.config import Recipe


@dataclass
class Build:
    recipe: Recipe
    out: Path
    cache: Cache
    remeasure: bool = (
        False  # run the target checks again (host latency is otherwise kept from the run that measured it)
    )

    @property
    def dir(self) -> Path:
        return self.out / self.recipe.name

    @property
    def log_path(self) -> Path:
        return self.dir / "build.log"

    @property
    def versions(self) -> dict:
        return self.cache.versions
