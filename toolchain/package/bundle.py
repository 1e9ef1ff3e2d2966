"""Release bundles: a reproducible tarball of a build, with a manifest of hashes, and its verification.

The same build packaged twice gives byte-identical tarballs: entries sorted, mtimes, owners and modes
fixed, gzip header without name or time, no build timings in the manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from toolchain.errors import BundleMalformed, BundleTampered, MissingInputError, PackagingError
from toolchain.fsutil import capture_fds, sha256_file
from toolchain.record import Reload, load_record

BUNDLE_SCHEMA = "toolchain.bundle/1"
#: Files of a target folder that go into a release (logs stay behind: they hold local paths).
SHIPPED = ("*.tflite", "model_data.cc", "model_data.h", "*_summary_*.csv", "report.json", "report.md")
FIXED_MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def collect(build_dir: Path, allow_failed: bool = False) -> tuple[dict, dict[str, bytes]]:
    """The manifest (without ``files``) and the files of a build, keyed by their path in the bundle."""
    if not (build_dir / "build.json").exists():
        raise PackagingError(f"{build_dir}: no build.json here; run 'toolchain build' first or name the recipe")
    record = load_record(build_dir)
    failed = [f"{r.target}: {f.message}" for r in record.results for f in r.failures]
    if failed and not allow_failed:
        raise PackagingError(
            f"refusing to package a build whose gates failed ({'; '.join(failed)}); pass --allow-failed to "
            "package it anyway"
        )
    files: dict[str, bytes] = {}
    recipe = Path(record.recipe_file) if record.recipe_file else None
    if recipe and recipe.exists():
        if sha256_file(recipe) != record.recipe_sha256:
            raise PackagingError(f"{recipe} changed since it was built; rebuild before packaging")
        files["recipe.yaml"] = recipe.read_bytes()
    labels = ("\n".join(record.labels) + "\n").encode()
    targets = []
    for r in record.results:
        tdir = build_dir / r.target
        shipped = sorted({p for pattern in SHIPPED for p in tdir.glob(pattern) if p.is_file()})
        if not shipped:
            raise PackagingError(f"{tdir}: no artifacts; rebuild before packaging")
        for p in shipped:
            files[f"{r.target}/{p.name}"] = p.read_bytes()
        files[f"{r.target}/labels.txt"] = labels
        reload = r.reload or Reload(runtime="litert")  # how verify proves the artifact loads: the target's runtime
        targets.append(
            {
                "target": r.target,
                "kind": r.kind,
                "mode": r.mode,
                "io_type": r.io_type,
                "artifact": f"{r.target}/{Path(r.artifact).name}",
                "passed": r.passed,
                "failures": [f.message for f in r.failures],
                "check": reload.model_dump(),
            }
        )
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "name": record.recipe,
        "recipe": {"file": "recipe.yaml" if "recipe.yaml" in files else None, "sha256": record.recipe_sha256},
        "data_digest": record.data_digest,
        "tool_versions": record.tool_versions,
        "targets": targets,
    }
    return manifest, files


def package(build_dir: Path, out_dir: Path, version: str | None = None, allow_failed: bool = False) -> Path:
    manifest, files = collect(Path(build_dir), allow_failed)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    version = version or "dev-" + hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:10]
    if not version or "/" in version or version.startswith("."):
        raise PackagingError(f"--version {version!r} is not usable in a file name")
    manifest = {**manifest, "version": version, "files": digests}
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    top = f"{manifest['name']}-{version}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{top}.tar.gz"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{top}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name in sorted(files):
                    info = tarfile.TarInfo(f"{top}/{name}")
                    info.size, info.mtime, info.mode = len(files[name]), FIXED_MTIME, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(files[name]))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


#: Bounds on what ``verify`` reads: a bundle is a handful of models and reports.
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 256 << 20
MAX_TOTAL_BYTES = 1 << 30


def _read_members(tar: tarfile.TarFile, bundle: Path) -> tuple[str, dict[str, str], dict[str, bytes]]:
    """Stream every member once: check it cannot write outside the bundle's folder and stays within the bounds,
    hash it, and keep in memory only the manifest and the models (which ``verify`` loads)."""
    digests, kept, tops, total = {}, {}, set(), 0
    for count, m in enumerate(tar, 1):
        p = PurePosixPath(m.name)
        if count > MAX_MEMBERS:
            raise BundleMalformed(f"{bundle}: more than {MAX_MEMBERS:,} members")
        if m.name.startswith("/") or p.is_absolute() or ".." in p.parts:
            raise BundleMalformed(f"{bundle}: unsafe path {m.name!r} (absolute or '..')")
        if not (m.isfile() or m.isdir()):
            raise BundleMalformed(f"{bundle}: {m.name!r} is a link or special file; bundles hold regular files only")
        tops.add(p.parts[0])
        if not m.isfile():
            continue
        total += m.size
        if m.size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
            raise BundleMalformed(
                f"{bundle}: {m.name!r} ({m.size:,} bytes) exceeds the bounds of a bundle "
                f"({MAX_MEMBER_BYTES >> 20} MiB a file, {MAX_TOTAL_BYTES >> 20} MiB in all)"
            )
        name = str(PurePosixPath(*p.parts[1:]))
        if name in digests:
            raise BundleMalformed(f"{bundle}: {name} appears twice")
        h, keep, chunks, f = (
            hashlib.sha256(),
            name == "manifest.json" or name.endswith(".tflite"),
            [],
            tar.extractfile(m),
        )
        for block in iter(lambda f=f: f.read(1 << 20), b""):
            h.update(block)
            if keep:
                chunks.append(block)
        digests[name] = h.hexdigest()
        if keep:
            kept[name] = b"".join(chunks)
    if len(tops) != 1:
        raise BundleMalformed(f"{bundle}: expected one top-level folder, found {len(tops)}")
    return tops.pop(), digests, kept


def _manifest(kept: dict[str, bytes], bundle: Path) -> tuple[dict, dict[str, str], list[dict]]:
    try:
        manifest = json.loads(kept.pop("manifest.json"))
        expected, targets = manifest["files"], manifest["targets"]
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleMalformed(f"{bundle}: missing or invalid manifest.json ({type(exc).__name__}: {exc})") from None
    if manifest.get("schema") != BUNDLE_SCHEMA:
        raise BundleMalformed(f"{bundle}: manifest schema {manifest.get('schema')!r} is not {BUNDLE_SCHEMA!r}")
    if not isinstance(expected, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in expected.items()
    ):
        raise BundleMalformed(f"{bundle}: manifest.json 'files' must map file names to sha256 digests")
    ok = lambda t: isinstance(t, dict) and isinstance(t.get("artifact"), str) and isinstance(t.get("check"), dict)  # noqa: E731
    if not isinstance(targets, list) or not all(
        ok(t) and t["check"].get("runtime") in ("litert", "tflite-micro") for t in targets
    ):
        raise BundleMalformed(f"{bundle}: manifest.json 'targets' must list each artifact with how to load it")
    return manifest, expected, targets


def verify(bundle: Path) -> dict:
    """Check hashes, safety and that each artifact loads in its runtime; raise or return a summary."""
    bundle = Path(bundle)
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            top, digests, kept = _read_members(tar, bundle)
    except FileNotFoundError:
        raise MissingInputError(f"{bundle}: file not found") from None
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BundleMalformed(f"{bundle}: not a readable .tar.gz ({exc})") from None
    digests.pop("manifest.json", None)
    manifest, expected, targets = _manifest(kept, bundle)
    for name, digest in sorted(expected.items()):
        if name not in digests:
            raise BundleTampered(f"{bundle}: {name} is listed in the manifest but missing")
        if digests[name] != digest:
            raise BundleTampered(f"{bundle}: {name} does not match its sha256 in the manifest")
    extra = sorted(set(digests) - set(expected))
    if extra:
        raise BundleTampered(f"{bundle}: {extra[0]} is not in the manifest")
    loaded = [_load(kept, t, bundle) for t in targets]
    return {"bundle": str(bundle), "top": top, "files": len(expected) + 1, "artifacts": loaded}


def _load(files: dict[str, bytes], t: dict, bundle: Path) -> str:
    from toolchain.errors import RuntimeValidationError

    blob = files.get(t["artifact"])
    if blob is None:
        raise BundleMalformed(f"{bundle}: manifest names artifact {t['artifact']} but the bundle lacks it")
    check = t["check"]
    try:
        if check["runtime"] == "litert":
            from toolchain.checks.litert import LiteRT

            with capture_fds(Path(os.devnull)):  # LiteRT announces its XNNPACK delegate on stderr
                LiteRT(blob)
        else:
            from toolchain.checks import tflm

            with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
                path = Path(tmp) / "model.tflite"
                path.write_bytes(blob)
                arena = check.get("arena_bytes") or 10 * len(blob) + (1 << 20)
                outcome = tflm.probe(path, arena)
                if not outcome.ok:
                    raise RuntimeValidationError(outcome.describe())
    except RuntimeValidationError as exc:
        raise BundleMalformed(f"{bundle}: {t['artifact']} does not load in {check['runtime']}: {exc}") from None
    return f"{t['artifact']}: loads in {check['runtime']}"
