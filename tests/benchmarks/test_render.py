"""docs/benchmarks.md and the detail pages are generated: regenerating them from the results gives the same bytes."""

import subprocess
import sys

import pytest

from benchmarks import SUITE, common, render


@pytest.mark.parametrize("path", list(render.pages()), ids=lambda p: p.name)
def test_the_page_on_disk_is_what_the_results_give(path):
    assert path.read_text() == render.pages()[path], f"{path} is stale: run `python -m benchmarks.render`"


def test_every_benchmark_has_a_result_a_template_and_a_readme_link():
    for name in SUITE:
        assert common.result_path(name).exists(), name
        assert (render.TEMPLATES / f"{name}.md").exists(), name
    assert "docs/benchmarks.md" in (common.REPO / "README.md").read_text()


def test_render_check_fails_on_a_stale_page(tmp_path):
    pages = render.pages(docs=tmp_path)
    assert render.main(["--check", "--docs", str(tmp_path)]) == 1
    assert render.main(["--docs", str(tmp_path)]) == 0
    assert all(p.read_text() == text for p, text in pages.items())
    assert render.main(["--check", "--docs", str(tmp_path)]) == 0


def test_rendering_imports_no_tensorflow():
    code = "import sys; from benchmarks import render; render.pages(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=common.REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
