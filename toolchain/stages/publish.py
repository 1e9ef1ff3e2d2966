"""What a target folder holds besides the artifact: firmware sources and the reports."""

from __future__ import annotations

from pathlib import Path

from toolchain.fsutil import atomic_write
from toolchain.package.c_source import write_model_sources
from toolchain.record import TargetResult
from toolchain.report.markdown import target_markdown


def write_target_files(folder: Path, recipe: str, result: TargetResult) -> None:
    if result.firmware:  # the model the firmware flashes (Vela's for an NPU) and the arena it reserves
        write_model_sources((folder / result.firmware.model_file).read_bytes(), folder, result.firmware.arena_bytes)
    atomic_write(folder / "report.json", result.model_dump_json(indent=2) + "\n")
    atomic_write(folder / "report.md", target_markdown(recipe, result))
