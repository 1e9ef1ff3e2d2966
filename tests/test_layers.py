"""The import-linter layers contract names every package and module of toolchain/, so none sits outside it."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO


def test_the_layers_contract_names_every_package_of_toolchain():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip().removeprefix("toolchain.") for layer in layers for m in re.split(r"[|:]", layer)}
    root = REPO / "toolchain"
    present = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    present |= {p.stem for p in root.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert named == present, f"missing from the layers: {present - named}; named but absent: {named - present}"
