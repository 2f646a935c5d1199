"""Inputs written to break the loader: each ends in data or in one positioned ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from oellm.compiler.errors import ConfigError
from oellm.compiler.guard import MAX_FILE_BYTES
from oellm.compiler.load import load_file, load_text
from oellm.compiler.pipeline import CompileRequest, compile_bundle

BASE = "project: {name: fz}\nbackend: {bash: {command: 'true'}}\n"


def refused(text: str) -> str:
    """The one problem `text` is refused with, rendered."""
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.yaml")
    (problem,) = info.value.problems
    return problem.render()


def refused_bytes(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "f.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_file(path, "f.yaml")
    (problem,) = info.value.problems
    return problem.render()


# -- decoding


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ("# café\na: 1\n".encode("latin-1"), "f.yaml:1:6: byte 5 (0xe9) is not valid UTF-8"),
        (b"a: 1\nb: \xff\xfe\n", "f.yaml:2:4: byte 8 (0xff) is not valid UTF-8"),
        ("a: é\nb: ".encode() + b"\x80", "f.yaml:2:4: byte 9 (0x80)"),
        ("a: 1\n".encode("utf-16"), "f.yaml:1:1: byte 0: the file is UTF-16"),
        ("a: 1\n".encode("utf-16-be"), "f.yaml:1:1: byte 0 is a NUL byte"),
        ("a: 1\n".encode("utf-16-le"), "f.yaml:1:2: byte 1 is a NUL byte"),
        ("a: 1\n".encode("utf-32"), "f.yaml:1:1: byte 0: the file is UTF-32"),
    ],
)
def test_bytes_that_are_not_utf8_are_named(tmp_path: Path, data: bytes, where: str) -> None:
    message = refused_bytes(tmp_path, data)
    assert message.startswith(where), message
    assert "UTF-8" in message and "hint:" in message


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes("\ufeffa: é\n".encode())
    assert load_file(path, "f.yaml").data == {"a": "é"}


def test_oversized_files_are_refused_before_parsing(tmp_path: Path) -> None:
    message = refused_bytes(tmp_path, b"a: [" + b"0," * MAX_FILE_BYTES + b"]\n")
    assert message.startswith("f.yaml:1:1: the file is ")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('a: "\\ud800"\n', "f.yaml:1:1"),
        ('a: ["x", "\\udfff y"]\n', "f.yaml:1:10"),
        ('"\\ud800": 1\n', "f.yaml:1:1"),
    ],
)
def test_lone_surrogate_escapes_are_refused(text: str, where: str) -> None:
    assert refused(text).startswith(f"{where}: the text holds a lone surrogate")


def test_escaped_surrogate_pairs_are_one_character() -> None:
    assert load_text('a: "\\U0001F600"\n', "f.yaml").data == {"a": "\U0001f600"}


# -- merge keys


def test_merge_keys_merge_with_positions() -> None:
    text = (
        "base: &b {a: 1, b: 2}\n"
        "more: &m {z: 9, a: 7}\n"
        "c:\n"
        "  x: 0\n"
        "  <<: [*b, *m]\n"
        "  b: 3\n"
        "d:\n"
        "  <<: *b\n"
    )
    loaded = load_text(text, "f.yaml")
    # The mapping's own keys win, then the merged mappings in the order they are listed.
    assert loaded.data["c"] == {"a": 1, "z": 9, "x": 0, "b": 3}
    assert list(loaded.data["c"]) == ["a", "z", "x", "b"]
    assert loaded.data["d"] == {"a": 1, "b": 2}
    # A merged key points at where its value was written.
    assert str(loaded.origins[("c", "a")]) == "f.yaml:1:11"
    assert str(loaded.origins[("c", "z")]) == "f.yaml:2:11"
    assert str(loaded.origins[("c", "b")]) == "f.yaml:6:3"
    assert str(loaded.origins[("d", "b")]) == "f.yaml:1:17"


def test_merged_values_are_copies() -> None:
    loaded = load_text("a: &a {x: {y: 1}}\nb: {<<: *a}\n", "f.yaml")
    loaded.data["b"]["x"]["y"] = 2
    assert loaded.data["a"]["x"]["y"] == 1


def test_nested_merges_point_at_the_innermost_writer() -> None:
    loaded = load_text("a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b}\n", "f.yaml")
    assert loaded.data["c"] == {"x": 1, "y": 2}
    assert str(loaded.origins[("c", "x")]) == "f.yaml:1:8"
    assert str(loaded.origins[("c", "y")]) == "f.yaml:2:16"


# -- tags


@pytest.mark.parametrize(
    ("text", "tag", "where"),
    [
        ("a: !!omap [{x: 1}]\n", "!!omap", "1:4"),
        ("a:\n  b: !!python/object:os.system {x: 1}\n", "!!python/object:os.system", "2:6"),
        ("a: !!python/name:os.system ''\n", "!!python/name:os.system", "1:4"),
        ("a: !!python/object/apply:os.system [id]\n", "!!python/object/apply:os.system", "1:4"),
        ("a: !!set {x, y}\n", "!!set", "1:4"),
        ("a: !!binary aGVsbG8=\n", "!!binary", "1:4"),
        ("a: !!pairs [{x: 1}]\n", "!!pairs", "1:4"),
        ("a: [1, !local x]\n", "!local", "1:8"),
        ("a: !<tag:example.com,2000:x> 1\n", "tag:example.com,2000:x", "1:4"),
    ],
)
def test_unknown_tags_are_refused_where_written(text: str, tag: str, where: str) -> None:
    message = refused(text)
    assert message.startswith(f"f.yaml:{where}: the YAML tag '{tag}' is not supported"), message


def test_core_tags_still_work() -> None:
    text = "a: !!str 5\nb: !!int '7'\nc: !!float 1\nd: !!bool true\ne: !!null ''\nf: !!map {x: 1}\n"
    assert load_text(text, "f.yaml").data == {
        "a": "5",
        "b": 7,
        "c": 1.0,
        "d": True,
        "e": None,
        "f": {"x": 1},
    }


# -- depth, size and numbers


def test_deep_block_nesting_is_refused() -> None:
    text = "".join("  " * depth + f"k{depth}:\n" for depth in range(300)) + "  " * 300 + "x: 1\n"
    message = refused(text)
    assert message.startswith("f.yaml:100:199: "), message
    assert "nested more than 100 deep" in message


@pytest.mark.parametrize("bracket", ["[", "{a: "])
def test_deep_flow_nesting_is_refused(bracket: str) -> None:
    closing = "]" if bracket == "[" else "}"
    message = refused("a: " + bracket * 1000 + closing * 1000 + "\n")
    assert message.startswith("f.yaml:1:"), message
    assert "nested more than 100 deep" in message


def test_nesting_up_to_the_limit_loads() -> None:
    text = "a: " + "[" * 99 + "]" * 99 + "\n"
    value = load_text(text, "f.yaml").data["a"]
    for _ in range(98):
        (value,) = value
    assert value == []


def test_billion_laughs_is_refused_quickly() -> None:
    text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
    message = refused(text)
    assert "aliases expand this file to more than 200,000 values" in message
    assert message.startswith("f.yaml:6:4: "), message


def test_a_long_chain_of_merges_is_bounded() -> None:
    text = "a0: &a0 {x: 1}\n" + "".join(
        f"a{i}: &a{i}\n  <<: *a{i - 1}\n  k{i}: 1\n" for i in range(1, 3000)
    )
    assert "aliases expand this file" in refused(text)


def test_aliases_below_the_limit_are_copied() -> None:
    loaded = load_text("a: &a [1, 2]\nb: [*a, *a]\n", "f.yaml")
    assert loaded.data["b"] == [[1, 2], [1, 2]]
    assert loaded.data["b"][0] is not loaded.data["b"][1]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: " + "9" * 5000 + "\n", "f.yaml:1:4"),
        ("a: [1, -" + "1" * 30 + "]\n", "f.yaml:1:8"),
        # In range of Python's conversion: refused after it, at the key.
        ("a: 18446744073709551616\n", "f.yaml:1:1"),
        ("a: -9223372036854775809\n", "f.yaml:1:1"),
        ("a: 0x" + "f" * 40 + "\n", "f.yaml:1:1"),
        ("a: !!int '" + "9" * 5000 + "'\n", "f.yaml:1:4"),
    ],
)
def test_integers_beyond_64_bits_are_refused(text: str, where: str) -> None:
    message = refused(text)
    assert message.startswith(where), message
    assert "does not fit in 64 bits" in message


def test_64_bit_integers_load() -> None:
    text = "a: 18446744073709551615\nb: -9223372036854775808\nc: 000000000000000000000001\n"
    assert load_text(text, "f.yaml").data == {"a": 2**64 - 1, "b": -(2**63), "c": 1}


# -- interpolation


def compile_refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        compile_bundle(CompileRequest(experiment=path))
    rendered = "\n".join(problem.render() for problem in info.value.problems)
    return rendered.replace(f"{tmp_path}/", "")


def test_a_long_reference_chain_is_refused_at_its_start(tmp_path: Path) -> None:
    chain = "".join(f"  a{i}: ${{.a{i + 1}}}\n" for i in range(3000))
    text = BASE.replace("'true'", "'${vars.a0}'") + "vars:\n" + chain + "  a3000: 1\n"
    message = compile_refused(tmp_path, text)
    assert message.startswith("exp.yaml:2:18: backend.bash.command: interpolations refer through")
    assert "more than 100 keys: backend.bash.command -> vars.a0 -> vars.a1 -> ..." in message


def test_a_reference_chain_below_the_limit_resolves(tmp_path: Path) -> None:
    chain = "".join(f"  a{i}: ${{.a{i + 1}}}\n" for i in range(90))
    text = BASE.replace("'true'", "'${vars.a0}'") + "vars:\n" + chain + "  a90: echo\n"
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    bundle = compile_bundle(CompileRequest(experiment=path))
    assert b"echo" in bundle.files[bundle.lock_json["jobs"][0]["script"]]


def test_a_string_bomb_is_refused_at_the_key(tmp_path: Path) -> None:
    text = BASE + "vars:\n  a: xxxxxxxxxx\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"  {name}: " + f"${{.{prev}}}" * 10 + "\n"
    message = compile_refused(tmp_path, text)
    assert message.startswith("exp.yaml:10:3: vars.g: interpolations make this value larger")


def test_a_structure_bomb_is_refused_at_the_key(tmp_path: Path) -> None:
    text = BASE + "vars:\n  a: {x: 1}\n"
    for prev, name in zip("abcdefghi", "bcdefghij", strict=True):
        refs = ", ".join(f"k{i}: '${{..{prev}}}'" for i in range(10))
        text += f"  {name}: {{{refs}}}\n"
    message = compile_refused(tmp_path, text)
    assert message.startswith("exp.yaml:10:3: vars.g: references make this value hold 2,111,111")


def test_deeply_nested_interpolations_are_refused(tmp_path: Path) -> None:
    value = "${oc.concat:" * 500 + "x" + "}" * 500
    message = compile_refused(tmp_path, BASE + f"vars: {{a: '{value}'}}\n")
    assert message.startswith("exp.yaml:3:8: vars.a: interpolations are nested more than 32 deep")
