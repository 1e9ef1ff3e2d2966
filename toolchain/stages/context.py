"""What the stages share (the recipe, where the build goes, the cache) and the output folder's guard.

``open_build`` holds ``OUT/.lock`` for the whole build (one build at a time per output folder: a second
waits, or fails with ``--no-wait``), gives the build a private temp folder ``OUT/.tmp/<pid>`` that
``TMPDIR`` points to (TensorFlow's autograph files land there too) and removes it at the end, also on
Ctrl-C or SIGTERM; what a killed build left behind (temp folders, half cache entries) is swept at the
next start, under the lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.cache import Cache
from toolchain.config import Recipe
from toolchain.errors import FILESYSTEM_ERRNOS, BuildLockedError, FilesystemError

log = logging.getLogger(__name__)
#: The longest path a build writes below OUT/<recipe>/<target>/ (temp names included), with room to spare.
PATH_ROOM = 200


@dataclass
class Build:
    recipe: Recipe
    out: Path
    cache: Cache
    remeasure: bool = (
        False  # run the target checks again (host latency is otherwise kept from the run that measured it)
    )
    shared: dict = field(default_factory=dict)  # values computed once per build (the int8 calibration)
    diagnose: bool = False  # write each int8 target's per-layer diagnosis into its folder

    @property
    def dir(self) -> Path:
        return self.out / self.recipe.name

    @property
    def log_path(self) -> Path:
        return self.dir / "build.log"

    @property
    def versions(self) -> dict:
        return self.cache.versions


@contextmanager
def _lock(out: Path, wait: bool):
    path = out / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            if not wait:
                raise BuildLockedError(
                    f"{out} is in use by another build ({holder}); wait for it, or use another --out"
                ) from None
            log.info("waiting for another build in %s (%s) to finish ...", out, holder)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sweep(out: Path) -> None:
    """Remove what killed builds left: temp folders and unfinished cache entries (only ours run now)."""
    shutil.rmtree(out / ".tmp", ignore_errors=True)
    for stale in (out / ".cache").glob("*/.*"):
        log.debug("removing stale temp %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    for stale in [*out.glob("*/.*.partial-*"), *out.glob("*/.*.tmp")]:  # a target folder or file being written
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextmanager
def hold(out: Path, wait: bool = True):
    """OUT locked, and swept of what killed builds left, for a run of many builds (``toolchain search``): its
    builds into other folders share OUT's stage cache."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out, wait):
        _sweep(out)
        yield out


def check_paths(out: Path, recipe: Recipe) -> None:
    """Refuse an output folder whose paths would be too long, before any work."""
    longest = len(os.fsencode(str((out / recipe.name).resolve()))) + PATH_ROOM
    limit = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    if longest > limit:
        raise FilesystemError(f"{out}: the build's paths would exceed {limit} bytes; use a shorter --out")


@contextmanager
def open_build(
    recipe: Recipe,
    out: Path,
    use_cache: bool = True,
    remeasure: bool = False,
    wait: bool = True,
    cache_root: Path | None = None,
    shared: bool = False,
):
    """The build context, with the output folder locked and a private temp folder for the build's life.
    ``cache_root``: the stage cache (default ``OUT/.cache``; a search's trials share their search's).
    ``shared``: one of several builds into OUT at once (on a cluster's workers) whose caller holds OUT's lock
    and swept it: this one takes no lock and sweeps nothing; its temp folder is named by host and pid."""
    out = Path(out)
    check_paths(out, recipe)
    out.mkdir(parents=True, exist_ok=True)
    with nullcontext() if shared else _lock(out, wait):
        if not shared:
            _sweep(out)
        tmp = out / ".tmp" / (f"{socket.gethostname()}-{os.getpid()}" if shared else str(os.getpid()))
        tmp.mkdir(parents=True, exist_ok=True)
        saved = tempfile.tempdir, os.environ.get("TMPDIR")
        tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)
        try:
            cache = Cache(cache_root or out / ".cache", enabled=use_cache, kind=recipe.model.kind)
            b = Build(recipe, out, cache, remeasure)
            b.dir.mkdir(parents=True, exist_ok=True)
            yield b
        except OSError as exc:
            if exc.errno not in FILESYSTEM_ERRNOS:
                raise
            raise FilesystemError(f"cannot write {exc.filename or out}: {exc.strerror}") from exc
        finally:
            tempfile.tempdir = saved[0]
            if saved[1] is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved[1]
            shutil.rmtree(tmp, ignore_errors=True)
            with suppress(OSError):
                tmp.parent.rmdir()  # the last build out of the folder removes it
