"""What a build folder holds besides the artifacts: each target's firmware sources and reports, the build's
compression report. (The record, ``build.json``, is the driver's: it is rewritten after each target.)"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from toolchain.cache import Cache, Stage
from toolchain.fsutil import atomic_write
from toolchain.package.c_source import write_model_sources
from toolchain.record import TargetResult
from toolchain.report.markdown import compression_markdown, target_markdown

C_SOURCES = Stage("c-sources", 1, timing="publish")
C_FILES = ("model_data.h", "model_data.cc")


def write_target_files(folder: Path, recipe: str, result: TargetResult, cache: Cache | None = None) -> None:
    """The target's firmware sources (when it has firmware) and reports; ``cache`` keeps the C sources (a few MB
    of text per model), so an unchanged rebuild copies them instead of formatting them again."""
    if result.firmware:  # the model the firmware flashes (Vela's for an NPU) and the arena it reserves
        model, arena = (folder / result.firmware.model_file).read_bytes(), result.firmware.arena_bytes
        if cache is None:
            write_model_sources(model, folder, arena)
        else:
            inputs = {"model": hashlib.sha256(model).hexdigest(), "arena": arena}
            _, entry = cache.run(C_SOURCES, inputs, lambda tmp: ({}, write_model_sources(model, tmp, arena)), _none)
            for name in C_FILES:
                shutil.copyfile(entry.file(name), folder / name)
    write_reports(folder, recipe, result)


def _none(entry) -> None:
    return None


def write_reports(folder: Path, recipe: str, result: TargetResult) -> None:
    """``report.json`` and ``report.md`` of one target."""
    atomic_write(folder / "report.json", result.model_dump_json(indent=2) + "\n")
    atomic_write(folder / "report.md", target_markdown(recipe, result))


def write_compression(folder: Path, recipe: str, steps: list) -> None:
    """``compression.md``: what each compression step did (nothing when the recipe compresses nothing)."""
    if steps:
        atomic_write(folder / "compression.md", compression_markdown(recipe, steps))
