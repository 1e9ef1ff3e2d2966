"""The one cached-stage mechanism: a content-addressed store of stage outputs.

A ``Stage`` declares its name, version and the tools whose versions its output depends on; a run
passes the inputs its key hashes and two functions, ``compute(tmpdir) -> (meta, value)`` (write the
output's files, return metadata and the in-memory value) and ``load(entry) -> value``. Lookup, timing,
atomic publish and file hashes live here only. An entry is a folder written under a temp name and
renamed into place; its ``meta.json`` records the sha256 and size of every file, and ``Entry.file``
checks a file's hash before handing it out, so a damaged entry is never trusted (it is discarded and
the stage runs again).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from toolchain.fsutil import sha256_file

log = logging.getLogger(__name__)

TOOLS = (
    "toolchain",
    "tensorflow",
    "tf_keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "numpy",
    "scikit-learn",
    "tflite-micro",
    "ethos-u-vela",
)
T = TypeVar("T")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@functools.cache
def _installed() -> dict[str, str]:
    """``{normalized name: version}`` from the ``<name>-<version>.dist-info`` folders on ``sys.path``, first found
    wins (as the import system picks): one directory listing each, no metadata file parsed."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for n in names:
            if n.endswith(".dist-info") and "-" in n:
                name, ver = n[: -len(".dist-info")].split("-", 1)
                found.setdefault(_normal(name), ver)
    return found


#: The tools a model source adds to the record (the converters of a PyTorch or ONNX model).
SOURCE_TOOLS = {
    "torch": ("torch", "litert-torch"),
    "onnx": ("onnx", "onnx2torch", "onnxruntime", "torch", "litert-torch"),
}


def tool_versions(kind: str = "keras") -> dict[str, str]:
    """The versions of the tools stage outputs depend on (cache keys, the record); ``missing`` when not installed.
    Read from the dist-info folder names (importlib.metadata's answer, without parsing every METADATA file; a tool
    installed another way is asked of importlib.metadata). ``kind``: the recipe's model kind, whose converters
    are added."""
    return {name: package_version(name) for name in (*TOOLS, *SOURCE_TOOLS.get(kind, ()))}


def package_version(name: str) -> str:
    """One installed package's version (``missing`` when it is not installed)."""
    return _installed().get(_normal(name)) or _metadata_version(name)


def _metadata_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def make_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class DamagedEntry(Exception):
    """A cache entry's file is missing or does not match its recorded hash."""


@dataclass(frozen=True)
class Stage:
    name: str
    version: int
    tools: tuple[str, ...] = ()
    timing: str | None = None  # the timings_s key it adds to (default: its name)


@dataclass
class Entry:
    dir: Path
    meta: dict
    hit: bool
    _verified: set = field(default_factory=set)

    def file(self, name: str) -> Path:
        """The path of one of the entry's files, after checking its sha256 (once per process)."""
        path = self.dir / name
        if name not in self._verified:
            want = self.meta.get("files", {}).get(name)
            if (
                want is None
                or not path.is_file()
                or path.stat().st_size != want["size"]
                or sha256_file(path) != want["sha256"]
            ):
                raise DamagedEntry(f"{path}: missing or does not match its recorded sha256")
            self._verified.add(name)
        return path


class Cache:
    def __init__(self, root: Path, enabled: bool = True, versions: dict | None = None, kind: str = "keras"):
        self.root = Path(root)
        self.enabled = enabled
        self.versions = versions if versions is not None else tool_versions(kind)
        self.timings: dict[str, float] = {}

    def key(self, stage: Stage, inputs: dict) -> str:
        return make_key(
            stage=stage.name,
            v=stage.version,
            inputs=inputs,
            tools={t: self.versions.get(t) or package_version(t) for t in stage.tools},
        )

    def lookup(self, stage: Stage, key: str) -> Entry | None:
        d = self.root / stage.name / key
        try:
            meta = json.loads((d / "meta.json").read_text())
            files = meta["files"]
            if any(not (d / n).is_file() or (d / n).stat().st_size != f["size"] for n, f in files.items()):
                raise DamagedEntry(f"{d}: incomplete")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, DamagedEntry) as exc:
            log.warning("cache: discarding damaged entry %s/%s (%s)", stage.name, key[:12], exc)
            shutil.rmtree(d, ignore_errors=True)
            return None
        return Entry(d, meta, hit=True)

    def publish(self, stage: Stage, key: str, fill: Callable[[Path], dict], replace: bool = False) -> Entry:
        """Run ``fill(tmpdir) -> meta`` and rename the folder into place with the files' hashes. An entry of the
        same key already there (another process published it meanwhile) is kept, unless ``replace``."""
        final = self.root / stage.name / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key[:12]}."))
        try:
            meta = fill(tmp)
            files = {
                p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
                for p in sorted(tmp.iterdir())
                if p.is_file()
            }
            meta = {"stage": stage.name, "key": key, **meta, "files": files}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            if final.exists() and (replace or not self.enabled):  # this run's entry replaces the old one
                old = final.with_name(f".{key[:12]}.old-{os.getpid()}")
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                try:  # another process (a worker of a search) published the same key meanwhile: keep theirs
                    theirs = json.loads((final / "meta.json").read_text())
                    log.debug("cache: %s/%s was published by another process; keeping it", stage.name, key[:12])
                    return Entry(final, theirs, hit=False)
                except (OSError, ValueError):  # a broken folder (no meta.json): this entry replaces it
                    old = final.with_name(f".{key[:12]}.old-{os.getpid()}")
                    os.rename(final, old)
                    shutil.rmtree(old, ignore_errors=True)
                    os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Entry(final, meta, hit=False, _verified=set(files))

    def run(
        self,
        stage: Stage,
        inputs: dict,
        compute: Callable[[Path], tuple[dict, T]],
        load: Callable[[Entry], T],
        fresh: bool = False,
    ) -> tuple[T, Entry]:
        """The stage's value: loaded from a verified entry, or computed and published."""
        t0 = time.perf_counter()
        key = self.key(stage, inputs)
        entry = self.lookup(stage, key) if self.enabled and not fresh else None
        value: Any = None
        if entry is not None:
            try:
                value = load(entry)
            except DamagedEntry as exc:
                log.warning("cache: discarding damaged entry %s/%s (%s)", stage.name, key[:12], exc)
                shutil.rmtree(entry.dir, ignore_errors=True)
                entry = None
        if entry is None:
            box = {}

            def fill(tmp: Path) -> dict:
                meta, box["value"] = compute(tmp)
                return meta

            entry = self.publish(stage, key, fill, replace=fresh)
            value = box["value"]
        self.add_timings({stage.timing or stage.name: time.perf_counter() - t0})
        return value, entry

    def add_timings(self, timings: dict[str, float]) -> None:
        """Seconds spent per stage (``timings_s`` of the record), summed: this process's and its workers'."""
        for name, seconds in timings.items():
            self.timings[name] = round(self.timings.get(name, 0) + seconds, 3)
