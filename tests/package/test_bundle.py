"""Release bundles: reproducible bytes, hashes that catch one changed byte, and no path escapes."""

import hashlib
import io
import json
import tarfile

import pytest

from toolchain.errors import BundleMalformed, BundleTampered
from toolchain.package.bundle import package, verify


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle(all_targets, tmp_path_factory):
    _, out = all_targets
    return package(out / "tiny", tmp_path_factory.mktemp("dist"), version="1.0.0")


@pytest.mark.tf
def test_packaging_twice_is_byte_identical(all_targets, bundle, tmp_path):
    _, out = all_targets
    again = package(out / "tiny", tmp_path, version="1.0.0")
    assert again.name == "tiny-1.0.0.tar.gz" and sha(again) == sha(bundle)


@pytest.mark.tf
def test_bundle_contents_and_manifest(bundle):
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        members = tar.getmembers()
        manifest = json.loads(tar.extractfile("tiny-1.0.0/manifest.json").read())
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    for expected in (
        "cortex-m7/tiny_int8.tflite",
        "cortex-m7/model_data.cc",
        "cortex-m7/model_data.h",
        "cortex-m7/labels.txt",
        "ethos-u55-128/tiny_int8_vela.tflite",
        "ethos-u55-128/model_data.cc",
        "phone-cpu/report.json",
        "edgetpu/report.md",
    ):
        assert f"tiny-1.0.0/{expected}" in names
        assert len(manifest["files"][expected]) == 64
    assert not any(n.endswith(".log") for n in names)
    assert manifest["version"] == "1.0.0" and manifest["data_digest"]
    assert manifest["tool_versions"]["tensorflow"] and manifest["recipe"]["sha256"]
    assert "timings" not in json.dumps(manifest)


@pytest.mark.tf
def test_verify_passes(bundle, run_cli):
    code, out, _ = run_cli("verify", bundle)
    assert code == 0
    assert (
        "cortex-m7/tiny_int8.tflite: loads in tflite-micro" in out
        and "phone-cpu/tiny_int8.tflite: loads in litert" in out
    )


def rewrite(src, dst, change):
    """Copy a bundle, passing each (info, data) through ``change``, which may return None to drop or a list to add."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            for info, payload in change(m, data):
                tout.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return dst


@pytest.mark.tf
def test_one_changed_byte_is_tampered(bundle, tmp_path, run_cli):
    def flip(m, data):
        if m.name.endswith("cortex-m7/tiny_int8.tflite"):
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return [(m, data)]

    bad = rewrite(bundle, tmp_path / "bad.tar.gz", flip)
    with pytest.raises(BundleTampered, match="cortex-m7/tiny_int8.tflite does not match its sha256"):
        verify(bad)
    code, _, err = run_cli("verify", bad)
    assert code == 14 and "does not match" in err


@pytest.mark.tf
def test_path_escape_is_refused_and_writes_nothing(bundle, tmp_path, run_cli):
    def evil(m, data):
        out = [(m, data)]
        if m.name.endswith("manifest.json"):
            info = tarfile.TarInfo("tiny-1.0.0/../evil")
            info.size = 4
            out.append((info, b"evil"))
        return out

    bad = rewrite(bundle, tmp_path / "evil.tar.gz", evil)
    code, _, err = run_cli("verify", bad)
    assert code == 13 and "unsafe path 'tiny-1.0.0/../evil'" in err
    assert not (tmp_path / "evil").exists()


@pytest.mark.tf
def test_links_are_refused(bundle, tmp_path):
    def link(m, data):
        out = [(m, data)]
        if m.name.endswith("manifest.json"):
            info = tarfile.TarInfo("tiny-1.0.0/passwd")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            out.append((info, None))
        return out

    with pytest.raises(BundleMalformed, match="link or special file"):
        verify(rewrite(bundle, tmp_path / "link.tar.gz", link))


def test_not_a_bundle(tmp_path, run_cli):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    code, _, err = run_cli("verify", junk)
    assert code == 13 and "not a readable .tar.gz" in err


@pytest.mark.tf
def test_failed_build_is_refused_unless_allowed(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(extra="acceptance: {max_size_kb: 1}", train="train: {epochs: 1}")
    code, _, err = run_cli("package", recipe, "--build-out", tmp_path / "b", "--out", tmp_path / "dist")
    assert code == 12
    assert "refusing to package a build whose gates failed (phone-cpu: max_size_kb:" in err
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
    code, out, _ = run_cli("package", tmp_path / "b" / "tiny", "--out", tmp_path / "dist", "--allow-failed")
    assert code == 0 and "tiny-dev-" in out
    assert verify(next((tmp_path / "dist").glob("*.tar.gz")))["files"] > 3


@pytest.mark.tf
def test_package_from_recipe_reuses_its_build(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(train="train: {epochs: 1}")
    args = ("package", recipe, "--build-out", tmp_path / "b", "--version", "2")
    code, first, _ = run_cli(*args, "--out", tmp_path / "d1")
    assert code == 0
    code, second, err = run_cli(*args, "--out", tmp_path / "d2")
    assert code == 0 and "using the existing build" in err
    assert first.split()[-1] == second.split()[-1]  # same sha256
    recipe.write_text(recipe.read_text() + "# changed\n")
    code, _, err = run_cli(*args, "--out", tmp_path / "d3")
    assert code == 0 and "using the existing build" not in err
