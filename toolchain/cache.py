"""Content-addressed cache of stage outputs.

A key hashes the stage name and version, the recipe/target fields it reads, its input digests and
tool versions. An entry is a directory written under a temp name and renamed into place, so a
crashed or interrupted build never leaves a half entry that a later build would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

TOOLS = ("toolchain", "tensorflow", "tf_keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy", "scikit-learn", "tflite-micro", "ethos-u-vela")


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def make_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class Cache:
    def __init__(self, root: Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled

    def dir(self, stage: str, key: str) -> Path:
        """Where the entry lives (whether or not it exists yet)."""
        return self.root / stage / key

    def get(self, stage: str, key: str) -> Path | None:
        """The entry's directory if it is complete and caching is on."""
        d = self.dir(stage, key)
        return d if self.enabled and (d / "meta.json").exists() else None

    @contextmanager
    def put(self, stage: str, key: str, meta: dict | None = None):
        """Yield a temp directory to fill; on success it becomes the entry (replacing an old one)."""
        final = self.dir(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key[:12]}."))
        try:
            yield tmp
            (tmp / "meta.json").write_text(json.dumps({"stage": stage, "key": key, **(meta or {})}, indent=2, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def meta(self, stage: str, key: str) -> dict:
        return json.loads((self.dir(stage, key) / "meta.json").read_text())
