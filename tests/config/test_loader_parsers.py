"""The strict YAML loader reads the same with libyaml's parser and with PyYAML's own (the fallback)."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from toolchain.config import loader
from toolchain.errors import ConfigError

PARSERS = [pytest.param(loader._PyParser, id="pyyaml")]
if yaml.__with_libyaml__:
    PARSERS.append(pytest.param(yaml.cyaml.CParser, id="libyaml"))


def _read(parser, text: str, path: Path = Path("x.yaml")):
    cls = loader.loader_class(parser)
    ld = cls(text, path)
    try:
        node = ld.get_single_node()
        return ld.construct_document(node), loader._line_map(node)
    finally:
        ld.dispose()


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml"))[:3] + [REPO / "targets/cortex-m7.yaml"])
def test_a_shipped_file_reads_the_same_with_either_parser(parser, path):
    text = path.read_text()
    assert _read(parser, text) == _read(loader._PyParser, text)
    assert _read(parser, text)[0] == yaml.safe_load(text)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x 1\nb: *x\n", "x.yaml:1: YAML anchors and aliases"),
        ("a: 1\nb: 2\na: 3\n", "x.yaml:3: duplicate key 'a'"),
        ("a: !!python/object 1\n", "x.yaml:1: tag 'tag:yaml.org,2002:python/object' is not allowed"),
        ("? [a]\n: 1\n", "x.yaml:1: a key must be a plain name"),
    ],
)
def test_the_strict_rules_hold_with_either_parser(parser, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        _read(parser, text)
