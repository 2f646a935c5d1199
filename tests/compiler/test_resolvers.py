"""Resolvers: `oc.env` keeps one type whether the variable is set or not, `oc.decode` types
text, and the predecessor's resolvers that `oc.eval` cannot express."""

from __future__ import annotations

from typing import Any

import pytest

from oellm.compiler.errors import ConfigError
from oellm.compiler.interpolate import Resolver
from oellm.compiler.load import load_text


def resolve(text: str, env: dict[str, str] | None = None) -> Any:
    loaded = load_text(text, "t.yaml")
    return Resolver(loaded.data, loaded.origins, env or {}).resolve()


def error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve(text, env)
    return info.value


ENV_CASES = """
n: ${oc.env:N,5}
lr: ${oc.env:N,1e-4}
flag: ${oc.env:N,true}
none: ${oc.env:N,null}
quoted: ${oc.env:N,'5'}
"""


def test_env_gives_text_whether_set_or_not() -> None:
    unset = resolve(ENV_CASES)
    assert unset == {"n": "5", "lr": "1e-4", "flag": "true", "none": None, "quoted": "5"}
    set_ = resolve(ENV_CASES, {"N": "7"})
    assert set_ == {"n": "7", "lr": "7", "flag": "7", "none": "7", "quoted": "7"}
    assert {type(v) for v in set_.values()} == {type(v) for v in unset.values()} - {type(None)}


def test_decode_gives_a_number_in_both_cases() -> None:
    text = "n: ${oc.decode:${oc.env:N,5}}\nt: ${oc.decode:${oc.env:T,null}}\n"
    assert resolve(text) == {"n": 5, "t": None}
    assert resolve(text, {"N": "12", "T": "1.5"}) == {"n": 12, "t": 1.5}


def test_decode_reads_lists_dicts_bools_and_quoted_text() -> None:
    env = {"NODES": "[host1, host2]", "CFG": "{a: 1, b: [x]}", "B": "false", "S": "'a, b'"}
    text = (
        "nodes: ${oc.decode:${oc.env:NODES}}\ncfg: ${oc.decode:${oc.env:CFG}}\n"
        "b: ${oc.decode:${oc.env:B}}\ns: ${oc.decode:${oc.env:S}}\nw: ${oc.decode:'plain'}\n"
    )
    assert resolve(text, env) == {
        "nodes": ["host1", "host2"],
        "cfg": {"a": 1, "b": ["x"]},
        "b": False,
        "s": "a, b",
        "w": "plain",
    }


@pytest.mark.parametrize("value", ["a,b", "[1,", "x #y"])
def test_decode_refuses_what_it_cannot_read(value: str) -> None:
    problem = error("v: ${oc.decode:${oc.env:V}}\n", {"V": value}).problems[0]
    assert problem.message.startswith(f"${{oc.decode:${{oc.env:V}}}}: cannot decode {value!r}")
    assert problem.origin is not None and problem.origin.line == 1


def test_env_refuses_a_list_default() -> None:
    problem = error("v: ${oc.env:V,${l}}\nl: [1]\n").problems[0]
    assert "the default must be text or null" in problem.message
