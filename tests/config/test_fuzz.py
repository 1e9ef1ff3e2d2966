"""Fuzzing the recipe loader: real recipes, mutated by a seeded mutator (byte flips, deletions, swapped lines,
random tags, anchors, truncation), raise nothing but a one-line ToolchainError, each in well under a second.
20,000 mutants (``slow``; about 15 s) and the first 2,000 of them in the fast tier."""

import random
import tempfile
import time
from pathlib import Path

import pytest

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
    b"!!timestamp ",
    b"2001-12-14t21:59:43.10-05:00",
    b"2020-02-30",
]
FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-recipes-"))


def mutated(rng: random.Random) -> bytes:
    """One mutant: a shipped recipe with one to four mutations."""
    text = bytearray(rng.choice(TEXTS))
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["flip", "delete", "insert", "swap", "duplicate", "truncate"])
        at = rng.randint(0, max(0, len(text) - 1))
        if op == "flip" and text:
            text[at] = rng.randint(0, 255)
        elif op == "delete":
            del text[at : at + rng.randint(1, 40)]
        elif op == "insert":
            text[at:at] = rng.choice(SNIPPETS)
        elif op in ("swap", "duplicate"):
            lines = bytes(text).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if op == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines.insert(j, lines[i])
            text = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del text[at:]
    return bytes(text)


@pytest.mark.parametrize("count", [2_000, pytest.param(20_000, marks=pytest.mark.slow)])
def test_mutated_recipes_raise_only_toolchain_errors(count):
    rng, path = random.Random(0), FOLDER / "recipe.yaml"
    refused, slowest = 0, 0.0
    for n in range(count):
        data = mutated(rng)
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            load_recipe(path)
        except ToolchainError as exc:
            assert str(exc) and "\n" not in str(exc).strip(), (n, data)  # one line
            refused += 1
        except Exception as exc:  # a crash: the mutant's number and bytes reproduce it
            raise AssertionError(f"mutant {n} of seed 0: {type(exc).__name__}: {exc}\n{data!r}") from exc
        slowest = max(slowest, time.perf_counter() - start)
    assert count * 0.5 < refused < count  # the mutants reach the loader's errors, and some still load
    assert slowest < 1.0, slowest
