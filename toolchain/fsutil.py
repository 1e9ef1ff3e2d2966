"""Small file-system helpers: atomic writes, hashing, capturing native stdout/stderr into a log."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Digest of a file, or of every file below a directory (names and contents)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _umask_mode() -> int:
    return 0o666 & ~_umask()


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write to a temp file beside ``path`` and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class AtomicDir:
    """A temp folder beside ``final`` (``path``) that ``publish()`` renames into place whole (no stale file of an
    earlier build survives) and ``discard()`` removes, so ``final`` is complete or as it was."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.partial-"))

    def publish(self) -> Path:
        try:
            os.chmod(self.path, 0o777 & ~_umask())
            old = None
            if self.final.exists():
                old = self.final.with_name(f"{self.path.name}.old")
                os.replace(self.final, old)
            os.replace(self.path, self.final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            self.discard()
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextmanager
def atomic_dir(final: Path):
    """Yield a temp folder beside ``final``; on success it replaces ``final`` whole, on failure it is removed
    (``AtomicDir``)."""
    folder = AtomicDir(final)
    try:
        yield folder.path
    except BaseException:
        folder.discard()
        raise
    folder.publish()


def atomic_copy(src: Path, dst: Path) -> Path:
    return atomic_write(dst, Path(src).read_bytes())


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


_consoles: list = []  # the real stderr of each active capture, innermost last


def console():
    """Where progress should go: the terminal's stderr, even while a capture is active."""
    return _consoles[-1] if _consoles else sys.stderr


@contextmanager
def capture_fds(log_path: Path):
    """Send everything written to fds 1 and 2 (TensorFlow's C++ chatter too) into ``log_path``.

    Progress logged meanwhile still reaches the terminal through ``console()``.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    if _consoles:
        term = _consoles[-1]
    else:
        term = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    _consoles.append(term)
    with open(log_path, "ab") as log, open(log.fileno(), "w", buffering=1, closefd=False) as text:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        py = sys.stdout, sys.stderr  # Python-level writers too (print, warnings), whatever sys.stdout is
        sys.stdout = sys.stderr = text
        try:
            yield log_path
        finally:
            sys.stdout, sys.stderr = py
            text.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            _flush_c_stdio()  # C++ code (the analyzer, the converter) buffers stdout in libc
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            _consoles.pop()
            if not _consoles:
                term.close()


class _ConsoleHandler(logging.StreamHandler):
    """Writes to the terminal's stderr, also while stages send fd 2 into the build log."""

    @property
    def stream(self):
        return console()

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it
        pass


def setup_logging(verbose: bool = False) -> None:
    """Progress of the ``toolchain`` loggers to the terminal's stderr (one handler, replaced on each call)."""
    handler = _ConsoleHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(name)s: %(message)s" if verbose else "%(message)s", "%H:%M:%S")
    )
    root = logging.getLogger("toolchain")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
