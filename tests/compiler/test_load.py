from __future__ import annotations

import pytest

from oellm.compiler.errors import ConfigError, Origin
from oellm.compiler.load import load_text


def test_plain_data_and_positions() -> None:
    loaded = load_text("a: 1e-4\nb:\n  - x\n  - {c: true}\n", "f.yaml")
    assert loaded.data == {"a": 0.0001, "b": ["x", {"c": True}]}
    assert type(loaded.data["a"]) is float
    assert loaded.origins[("a",)] == Origin("f.yaml", 1, 1)
    assert loaded.origins[("b", 1)] == Origin("f.yaml", 4, 5)
    assert loaded.origins[("b", 1, "c")] == Origin("f.yaml", 4, 6)


@pytest.mark.parametrize(
    ("text", "package"),
    [
        ("# @package _global_\na: 1\n", "_global_"),
        ("\n# comment\n#  @package  foo.bar\na: 1\n", "foo.bar"),
        ("a: 1\n# @package _global_\n", None),
        ("a: 1\n", None),
    ],
)
def test_package_header_only_in_leading_comments(text: str, package: str | None) -> None:
    assert load_text(text, "f.yaml").package == package


def test_empty_file_is_an_empty_mapping() -> None:
    assert load_text("# nothing\n", "f.yaml").data == {}


def test_dates_become_strings_and_tags_are_read() -> None:
    assert load_text("d: 2026-01-02\ns: !!str 5\n", "f.yaml").data == {"d": "2026-01-02", "s": "5"}


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("a: [1, 2\n", "f.yaml:2:1", "invalid YAML"),
        ("a: 1\na: 2\n", "f.yaml:2:1", "duplicate key"),
        ("a: .inf\n", "f.yaml:1:1", "infinite"),
        ("? [1, 2]\n: x\n", "f.yaml:1:3", "keys must be strings"),
    ],
)
def test_errors_have_positions(text: str, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.yaml")
    (problem,) = info.value.problems
    assert str(problem.origin) == where
    assert words in problem.message
