"""Property-based test of the recipe loader: real recipes, mutated (byte flips, deletions, swapped lines, random
tags, anchors, truncation), raise nothing but a ToolchainError, each in well under a second."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from toolchain.config import load_recipe
from toolchain.errors import ToolchainError

TEXTS = [p.read_bytes() for p in sorted((REPO / "recipes").rglob("*.yaml"))]
SNIPPETS = [
    b"!!int ",
    b"!!str ",
    b"!!float ",
    b"!!binary ",
    b"!!set ",
    b"!!python/object:os.system ",
    b"!foo ",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"{",
    b"[",
    b"]",
    b": ",
    b"- ",
    b"\t",
    b"'",
    b'"',
    b"\xff\xfe",
    b"\x00",
    b"1e999",
    b".nan",
    b"\n  ",
    b"---\n",
    b"...\n",
    b"? ",
    b"%YAML 1.1\n",
    b"~",
    b"0x1F",
]
FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-recipes-"))


@st.composite
def mutated(draw) -> bytes:
    text = bytearray(draw(st.sampled_from(TEXTS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "swap", "duplicate", "truncate"]))
        at = draw(st.integers(0, max(0, len(text) - 1)))
        if op == "flip" and text:
            text[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del text[at : at + draw(st.integers(1, 40))]
        elif op == "insert":
            text[at:at] = draw(st.sampled_from(SNIPPETS))
        elif op in ("swap", "duplicate"):
            lines = bytes(text).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if op == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines.insert(j, lines[i])
            text = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del text[at:]
    return bytes(text)


@settings(max_examples=2000, deadline=1000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated())
def test_mutated_recipes_raise_only_toolchain_errors(data):
    path = FOLDER / "recipe.yaml"
    path.write_bytes(data)
    try:
        load_recipe(path)
    except ToolchainError as exc:
        assert str(exc) and "\n" not in str(exc).strip()  # one line
