"""Small file-system helpers: atomic writes, hashing, capturing native stdout/stderr into a log; the terminal's
stderr: log lines and the progress of long steps (``progress``)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
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


@contextmanager
def held_signals():
    """Ctrl-C and SIGTERM wait for the end of the block (bookkeeping that must not be cut in two: a trial asked of
    the database and not yet recorded as running), then land as they would have. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in kinds}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)


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

    def emit(self, record):
        bars = _bars["live"]
        if bars is None:
            return super().emit(record)
        try:  # printed above the progress bars, which are drawn again below it
            from rich.text import Text

            bars.console.print(Text(self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)


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


SHOW_AFTER = 0.5  # seconds: a step shorter than this (a cached one) draws no bar
_bars: dict = {"live": None, "lock": threading.Lock()}  # the one rich Progress drawing every step's bar


def _duration(seconds: float) -> str:
    """``8.1 s``, ``45 s``, ``3 min 20 s``, ``1 h 05 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _terminal(stream) -> bool:
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class Step:
    """One long step's progress (``progress``): ``update(done)`` as it goes, ``update(done, line)`` also logs
    ``line`` with the elapsed time and the ETA."""

    def __init__(self, log: logging.Logger, what: str, total: float | None, unit: str, every: float):
        self.log, self.what, self.total, self.unit, self.every = log, what, total, unit, every
        self.done, self.start = 0.0, time.monotonic()
        self._first = None  # (time, done) at the first whole unit: the pace after it leaves out the warm-up
        self._last, self._task, self._stop = self.start, None, threading.Event()
        self._terminal = _terminal(console())
        threading.Thread(target=self._watch, daemon=True).start()

    @property
    def count(self) -> str:
        """``3/12 epochs`` (``1.4/12`` while an epoch runs); empty without a total."""
        if self.total is None:
            return ""
        done = f"{self.done:.0f}" if float(self.done).is_integer() else f"{int(self.done * 10) / 10:.1f}"
        return f"{done}/{self.total:g} {self.unit}".rstrip()

    @property
    def times(self) -> str:
        """``8.1 s, ETA 45 s``: elapsed, and what is left at the pace since the first whole unit (the first epoch
        traces the graph, the first probe starts the worker), or since the start before it."""
        now = time.monotonic()
        text = _duration(now - self.start)
        # no ETA from the first unit's start alone (tracing the graph, starting a worker: minutes, wrongly)
        known = self._first is not None or (self.total is not None and self.total <= 1 and self.done >= 0.25)
        if self.total and 0 < self.done < self.total and known:
            t0, d0 = self._first if self._first and self.done > self._first[1] else (self.start, 0.0)
            text += f", ETA {_duration((now - t0) / (self.done - d0) * (self.total - self.done))}"
        return text

    def update(self, done: float, line: str | None = None, total: float | None = None) -> None:
        """``done`` so far (of ``total``, when it is known only now); ``line``: logged with the times."""
        self.done, self.total = done, total if total is not None else self.total
        if self._first is None and done >= 1:
            self._first = (time.monotonic(), done)
        task, bars = self._task, _bars["live"]
        if task is not None and bars is not None:
            bars.update(task, completed=done, total=self.total)
        if line is not None:
            self._line(line)

    def _line(self, text: str) -> None:
        self._last = time.monotonic()
        self.log.info("%s, %s", text, self.times)

    def _watch(self) -> None:
        """On a terminal: the bar, once the step has run ``SHOW_AFTER`` seconds; else a line whenever none was
        logged for ``every`` seconds (a step blocked in one call too)."""
        if self._stop.wait(SHOW_AFTER):
            return
        if self._terminal:
            with _bars["lock"]:
                if not self._stop.is_set():
                    self._task = _bar(self)
            return
        while not self._stop.wait(max(0.0, self._last + self.every - time.monotonic())):
            if time.monotonic() - self._last >= self.every:
                self._line(f"{self.what}: {self.count or 'running'}")

    def close(self) -> None:
        with _bars["lock"]:
            self._stop.set()
            bars = _bars["live"]
            if self._task is not None and bars is not None:
                bars.remove_task(self._task)
                if not bars.tasks:
                    bars.stop()
                    _bars["live"] = None


def _bar(step: Step) -> int:
    """Add ``step`` to the bars drawn on the terminal's stderr (started for the first one): its name, a bar,
    ``n/total``, elapsed and ETA (``Step.count``, ``Step.times``)."""
    if _bars["live"] is None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        _bars["live"] = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[step].count}", markup=False),
            TextColumn("{task.fields[step].times}", markup=False),
            console=Console(file=console(), highlight=False),
            transient=True,
            refresh_per_second=4,
            redirect_stdout=False,  # stdout is the results' (and, in a build, the build log's)
            redirect_stderr=False,
        )
        _bars["live"].start()
    return _bars["live"].add_task(step.what, total=step.total, completed=step.done, step=step)


@contextmanager
def progress(log: logging.Logger, what: str, total: float | None = None, unit: str = "", every: float = 10.0):
    """The progress of a long step (training, calibration, probes, a compiler, a search) on the terminal's stderr:
    a bar with ``n/total``, elapsed and ETA while stderr is a terminal; otherwise (a file, a pipe, a worker
    process) a line through ``log`` whenever ``every`` seconds passed without one. ``total`` None: a step with
    no count (one blocking call). Yields the ``Step``; the bar is removed when the block ends."""
    step = Step(log, what, total, unit, every)
    try:
        yield step
    finally:
        step.close()
