from __future__ import annotations

from typing import Any

import pytest

from oellm.compiler.errors import ConfigError
from oellm.compiler.interpolate import Interpolator
from oellm.compiler.load import load_text


def resolve(text: str, env: dict[str, str] | None = None, keep: str | None = None) -> Any:
    loaded = load_text(text, "t.yaml")
    return Interpolator(loaded.data, loaded.origins, env or {}, keep_escaped=keep).resolve()


def error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(text, env)
    return "\n".join(p.render() for p in info.value.problems)


def test_keys_absolute_relative_and_typed() -> None:
    out = resolve(
        """
a: {b: 3, c: "${.b}", d: {e: "${..b}"}}
whole: ${a}
text: "n=${a.b}!"
f: 1e-4
g: "lr_${f}"
idx: "${l.1}"
l: [x, y]
"""
    )
    assert out["a"] == {"b": 3, "c": 3, "d": {"e": 3}}
    assert out["whole"] == {"b": 3, "c": 3, "d": {"e": 3}}
    assert out["text"] == "n=3!"
    assert out["g"] == "lr_0.0001"
    assert out["idx"] == "y"


def test_env_with_and_without_default() -> None:
    out = resolve(
        "a: ${oc.env:HOME_X}\nb: ${oc.env:NOPE,./out}\n"
        "c: ${oc.env:NOPE,null}\nd: ${oc.env:NOPE,3}\n",
        {"HOME_X": "/h"},
    )
    # OmegaConf's rule: a default is text, as a set variable is; only null stays null.
    assert out == {"a": "/h", "b": "./out", "c": None, "d": "3"}


def test_missing_env_names_variable_and_place() -> None:
    text = error("x:\n  y: ${oc.env:MISSING_VAR}\n")
    assert text.startswith("t.yaml:2:3: x.y: ")
    assert "'MISSING_VAR' is not set" in text
    assert "hint:" in text


def test_resolvers() -> None:
    out = resolve(
        """
n: 4
sel: ${oc.select:nope.x,fallback}
sel2: ${oc.select:n,0}
ev: "${oc.eval:'${n} * 2 + 1'}"
iff: ${oc.if:${n},yes,no}
iff2: ${oc.if:false,yes,no}
cat: ${oc.concat:a,b,${n}}
catl: ${oc.concat:${l1},${l2}}
l1: [1]
l2: [2, 3]
mul: ${oc.mul:2,3,${n}}
add: ${oc.add:1,2}
sub: ${oc.sub:10,4}
div: ${oc.div:7,2}
divi: ${oc.divi:7,2}
cdivi: ${oc.cdivi:7,2}
int: ${oc.int:3.9}
nested: "${oc.eval:'${oc.mul:${n},2} > 7'}"
"""
    )
    assert out["sel"] == "fallback"
    assert out["sel2"] == 4
    assert out["ev"] == 9
    assert out["iff"] == "yes" and out["iff2"] == "no"
    assert out["cat"] == "ab4"
    assert out["catl"] == [1, 2, 3]
    assert out["mul"] == 24.0 and out["add"] == 3.0 and out["sub"] == 6.0
    assert out["div"] == 3.5 and out["divi"] == 3 and out["cdivi"] == 4 and out["int"] == 3
    assert out["nested"] is True


def test_escaped_is_literal_outside_sweep_and_kept_inside() -> None:
    text = 'a: 1\nb: "\\\\${a}"\nsweep:\n  name: "x_\\\\${a}_${a}"\n'
    out = resolve(text, keep="sweep")
    assert out["b"] == "${a}"
    assert out["sweep"]["name"] == "x_\\${a}_1"


def test_cycle_names_the_keys() -> None:
    text = error("a: ${b}\nb: ${c}\nc: ${a}\n")
    assert "interpolation cycle: a -> b -> c -> a" in text


def test_missing_key_suggests() -> None:
    text = error("project:\n  name: x\nout: ${project.nmae}\n")
    assert "'project.nmae', which does not exist" in text
    assert "did you mean 'name'?" in text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: ${oc.nope:1}\n", "unknown resolver 'oc.nope'"),
        ("a: ${oc.div:1,0}\n", "division by zero"),
        ("a: ${oc.mul:2,x}\n", "expected a number"),
        ("a: \"${oc.eval:'__import__(1)'}\"\n", "not allowed"),
        ("a: ${b\n", "unclosed interpolation"),
        ("a: ${...x}\n", "climbs above"),
    ],
)
def test_errors(text: str, words: str) -> None:
    assert words in error(text)
