"""toolchain/cache.py on its own: keys, hits and misses, damaged and half-written entries, timings."""

from __future__ import annotations

import json
import logging
import os

import pytest

from toolchain.cache import Cache, DamagedEntry, Stage, make_key, tool_versions

VERSIONS = {"toolchain": "1.0", "numpy": "2.0", "tensorflow": "2.17"}
STAGE = Stage("square", 1, tools=("numpy",))


class Counter:
    """A stage computation that writes one file and counts its runs."""

    def __init__(self, payload: bytes = b"payload"):
        self.runs = 0
        self.payload = payload

    def compute(self, tmp):
        self.runs += 1
        (tmp / "out.bin").write_bytes(self.payload)
        return {"n": self.runs}, f"computed {self.runs}"

    @staticmethod
    def load(entry):
        return "loaded " + entry.file("out.bin").read_bytes().decode()


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache", versions=dict(VERSIONS))


def test_a_miss_computes_and_publishes_then_a_hit_loads(cache):
    c = Counter()
    value, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    assert value == "computed 1" and entry.hit is False and c.runs == 1
    value, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    assert value == "loaded payload" and entry.hit is True and c.runs == 1
    assert entry.dir == cache.root / "square" / cache.key(STAGE, {"x": 1})


def test_meta_records_the_stage_key_metadata_and_file_hashes(cache):
    import hashlib

    c = Counter(b"abc")
    _, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    meta = json.loads((entry.dir / "meta.json").read_text())
    assert meta["stage"] == "square" and meta["key"] == entry.dir.name and meta["n"] == 1
    assert meta["files"] == {"out.bin": {"sha256": hashlib.sha256(b"abc").hexdigest(), "size": 3}}


def test_different_inputs_are_different_entries(cache):
    c = Counter()
    cache.run(STAGE, {"x": 1}, c.compute, c.load)
    value, entry = cache.run(STAGE, {"x": 2}, c.compute, c.load)
    assert value == "computed 2" and not entry.hit
    assert len(list((cache.root / "square").iterdir())) == 2


def test_the_key_changes_with_the_stage_version_and_name(cache):
    base = cache.key(STAGE, {"x": 1})
    assert cache.key(Stage("square", 2, tools=("numpy",)), {"x": 1}) != base
    assert cache.key(Stage("cube", 1, tools=("numpy",)), {"x": 1}) != base
    assert cache.key(Stage("square", 1, tools=("numpy",)), {"x": 1}) == base


def test_the_key_changes_with_the_versions_of_the_stages_tools_only(tmp_path):
    a = Cache(tmp_path, versions=dict(VERSIONS))
    numpy_bumped = Cache(tmp_path, versions={**VERSIONS, "numpy": "2.1"})
    tf_bumped = Cache(tmp_path, versions={**VERSIONS, "tensorflow": "2.18"})
    assert numpy_bumped.key(STAGE, {"x": 1}) != a.key(STAGE, {"x": 1})
    assert tf_bumped.key(STAGE, {"x": 1}) == a.key(STAGE, {"x": 1})  # the stage does not use TensorFlow


def test_a_tool_upgrade_is_a_miss(tmp_path):
    c = Counter()
    Cache(tmp_path, versions=dict(VERSIONS)).run(STAGE, {"x": 1}, c.compute, c.load)
    value, entry = Cache(tmp_path, versions={**VERSIONS, "numpy": "9"}).run(STAGE, {"x": 1}, c.compute, c.load)
    assert value == "computed 2" and not entry.hit


def test_make_key_ignores_dict_order_but_not_values():
    assert make_key(a=1, b={"x": 1, "y": 2}) == make_key(b={"y": 2, "x": 1}, a=1)
    assert make_key(a=1, b={"x": 1, "y": 2}) != make_key(a=1, b={"x": 1, "y": 3})
    assert len(make_key(a=1)) == 64 and int(make_key(a=1), 16) >= 0


def test_tool_versions_names_every_tool_and_missing_ones_say_so():
    from importlib.metadata import version

    from toolchain.cache import TOOLS

    versions = tool_versions()
    assert list(versions) == list(TOOLS)
    assert versions["numpy"] == version("numpy")
    assert all(v == "missing" or v[0].isdigit() for v in versions.values()), versions


def test_versions_from_dist_info_names_agree_with_importlib_metadata():
    from importlib.metadata import PackageNotFoundError, version

    from toolchain.cache import TOOLS

    def metadata(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "missing"

    assert tool_versions() == {n: metadata(n) for n in TOOLS}


def test_a_package_is_found_by_its_dist_info_folder_and_an_absent_one_is_missing(tmp_path, monkeypatch):
    from toolchain import cache as c

    (tmp_path / "Made_Up.Tool-3.1.4rc1.dist-info").mkdir()
    monkeypatch.setattr("sys.path", [str(tmp_path), *__import__("sys").path])
    c._installed.cache_clear()
    try:
        assert c.package_version("made-up-tool") == "3.1.4rc1"
        assert c.package_version("no-such-package-here") == "missing"
    finally:
        c._installed.cache_clear()


def test_fresh_recomputes_and_replaces_the_entry(cache):
    c = Counter()
    _, first = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    c.payload = b"new"
    value, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load, fresh=True)
    assert value == "computed 2" and not entry.hit and entry.dir == first.dir
    assert (entry.dir / "out.bin").read_bytes() == b"new"
    assert cache.run(STAGE, {"x": 1}, c.compute, c.load)[0] == "loaded new"


def test_a_disabled_cache_always_computes(tmp_path):
    cache = Cache(tmp_path, enabled=False, versions=dict(VERSIONS))
    c = Counter()
    cache.run(STAGE, {"x": 1}, c.compute, c.load)
    value, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    assert value == "computed 2" and not entry.hit and c.runs == 2


def test_a_file_that_no_longer_matches_its_sha256_is_discarded_with_a_warning(cache, caplog):
    c = Counter(b"original")
    _, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    (entry.dir / "out.bin").write_bytes(b"tampered")  # same size, other bytes: only the hash tells
    with caplog.at_level(logging.WARNING, logger="toolchain.cache"):
        value, again = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    assert value == "computed 2" and not again.hit
    assert (again.dir / "out.bin").read_bytes() == b"original"
    assert [r.getMessage() for r in caplog.records if "discarding damaged entry square/" in r.getMessage()]
    assert "does not match its recorded sha256" in caplog.text


def test_a_file_of_the_wrong_size_is_discarded_at_lookup(cache, caplog):
    c = Counter()
    _, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    (entry.dir / "out.bin").write_bytes(b"short")
    key = cache.key(STAGE, {"x": 1})
    with caplog.at_level(logging.WARNING, logger="toolchain.cache"):
        assert cache.lookup(STAGE, key) is None
    assert not entry.dir.exists() and "incomplete" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "out.bin").unlink(),
        lambda d: (d / "meta.json").write_text("{not json"),
        lambda d: (d / "meta.json").write_text(json.dumps({"stage": "square"})),
        lambda d: (d / "meta.json").write_text(json.dumps({"files": ["out.bin"]})),
    ],
    ids=["file-missing", "meta-not-json", "meta-without-files", "files-not-a-map"],
)
def test_damaged_entries_are_misses_and_get_rebuilt(cache, damage, caplog):
    c = Counter()
    _, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    damage(entry.dir)
    with caplog.at_level(logging.WARNING, logger="toolchain.cache"):
        value, again = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    assert value == "computed 2" and not again.hit and c.runs == 2
    assert "discarding damaged entry" in caplog.text
    assert cache.run(STAGE, {"x": 1}, c.compute, c.load)[0] == "loaded payload"  # the rebuilt entry is good


def test_a_half_written_entry_without_meta_is_a_plain_miss(cache, caplog):
    """A folder without meta.json (killed before the rename would leave a temp name; this is worse) is no hit."""
    c = Counter()
    key = cache.key(STAGE, {"x": 1})
    (cache.root / "square" / key).mkdir(parents=True)
    (cache.root / "square" / key / "out.bin").write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="toolchain.cache"):
        value, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    assert value == "computed 1" and not entry.hit
    assert (entry.dir / "out.bin").read_bytes() == b"payload"


def test_a_compute_that_raises_publishes_nothing(cache):
    def boom(tmp):
        (tmp / "out.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError, match="killed mid-way"):
        cache.run(STAGE, {"x": 1}, boom, Counter.load)
    assert list((cache.root / "square").iterdir()) == []  # neither the entry nor its temp folder
    assert cache.lookup(STAGE, cache.key(STAGE, {"x": 1})) is None


def test_entry_file_checks_the_hash_once_and_refuses_unknown_names(cache):
    c = Counter()
    cache.run(STAGE, {"x": 1}, c.compute, c.load)
    entry = cache.lookup(STAGE, cache.key(STAGE, {"x": 1}))
    assert entry.hit and entry.file("out.bin").read_bytes() == b"payload"
    with pytest.raises(DamagedEntry, match="missing or does not match"):
        entry.file("other.bin")
    (entry.dir / "out.bin").write_bytes(b"PAYLOAD")
    assert entry.file("out.bin").read_bytes() == b"PAYLOAD"  # verified once per process, not on every call
    fresh = cache.lookup(STAGE, cache.key(STAGE, {"x": 1}))
    with pytest.raises(DamagedEntry):
        fresh.file("out.bin")


def test_a_published_entry_is_already_verified(cache):
    c = Counter()
    _, entry = cache.run(STAGE, {"x": 1}, c.compute, c.load)
    assert entry._verified == {"out.bin"}
    assert sorted(os.listdir(entry.dir)) == ["meta.json", "out.bin"]


def test_timings_are_summed_per_stage_and_timing_name(cache, monkeypatch):
    clock = iter([0.0, 1.5, 10.0, 10.25, 20.0, 20.5])
    monkeypatch.setattr("toolchain.cache.time.perf_counter", lambda: next(clock))
    c = Counter()
    cache.run(STAGE, {"x": 1}, c.compute, c.load)  # 1.5 s
    cache.run(STAGE, {"x": 2}, c.compute, c.load)  # 0.25 s
    cache.run(Stage("check-a", 1, timing="validate"), {"x": 1}, c.compute, c.load)  # 0.5 s
    assert cache.timings == {"square": 1.75, "validate": 0.5}


def test_versions_default_to_the_installed_tools(tmp_path):
    assert Cache(tmp_path).versions == tool_versions()


def test_an_entry_another_process_published_meanwhile_is_kept(cache):
    """Two workers of a search computing one key: the second to publish keeps the first's entry (its readers may
    hold it open) and still returns its own value; a fresh run replaces it."""
    other = Cache(cache.root, versions=dict(VERSIONS))
    theirs = Counter(b"theirs")

    class Racing(Counter):
        def compute(self, tmp):
            other.run(STAGE, {"x": 1}, theirs.compute, theirs.load)  # published while this one computes
            return super().compute(tmp)

    mine = Racing(b"mine")
    value, entry = cache.run(STAGE, {"x": 1}, mine.compute, mine.load)
    assert value == "computed 1" and (entry.dir / "out.bin").read_bytes() == b"theirs"
    assert entry.meta["n"] == 1 and entry.file("out.bin")  # theirs, verified against their own hashes
    assert not [p for p in entry.dir.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    value, entry = cache.run(STAGE, {"x": 1}, Counter(b"fresh").compute, Counter.load, fresh=True)
    assert (entry.dir / "out.bin").read_bytes() == b"fresh"
