"""Write docs/benchmarks.md and the detail pages from benchmarks/results/*.json and benchmarks/templates/*.md.

    python -m benchmarks.render [--check]

The prose is in the templates (``string.Template``: ``$name`` is filled from the benchmark module's
``values(result)``, plus ``$when`` and ``$command`` from the result itself); every number comes from a result file.
``--check`` writes nothing and exits 1 when a page on disk differs from what the results give.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from string import Template

from benchmarks import SUITE, common

TEMPLATES = Path(__file__).resolve().parent / "templates"
DOCS = common.REPO / "docs"


def when(result: dict) -> str:
    """``date, machine, Python and tool versions.`` as the result recorded them."""
    m = result["machine"]
    cores = f", {m['cores']} cores" if m.get("cores") else ""
    where = m.get("description") or f"{m['platform']} ({m['processor']}{cores})"
    facts = [result["date"], where]
    if m.get("python"):
        facts.append(f"Python {m['python']}")
    facts += [f"{k} {v}" for k, v in result.get("tool_versions", {}).items() if v != "missing"]
    return ", ".join(facts) + "."


def pages(results: Path = common.RESULTS, docs: Path = DOCS) -> dict[Path, str]:
    out: dict[Path, str] = {}
    index, sections = [], []
    for name, (title, shown) in SUITE.items():
        module = importlib.import_module(f"benchmarks.{name}")
        result = common.load_result(name, results)
        values = {"when": when(result), "command": result["command"], **module.values(result)}
        text = Template((TEMPLATES / f"{name}.md").read_text()).substitute(values)
        sections.append(text.strip() + "\n")
        index.append(f"| {title} | `python -m benchmarks.{name}` | {shown} |")
        if hasattr(module, "DETAIL"):
            out[docs / module.DETAIL] = module.detail(result)
    head = Template((TEMPLATES / "index.md").read_text()).substitute(index="\n".join(index))
    out[docs / "benchmarks.md"] = "\n".join([head, *sections])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page differs")
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    ap.add_argument("--docs", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    stale = []
    for path, text in pages(args.results, args.docs).items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
    if args.check and stale:
        print("out of date: " + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
