"""Resolvers: `oc.env` keeps one type whether the variable is set or not, `oc.decode` types
text, and the predecessor's resolvers that `oc.eval` cannot express."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oellm.compiler.errors import ConfigError
from oellm.compiler.interpolate import Interpolator
from oellm.compiler.load import load_text
from tests.helpers import compile_file, write


def resolve(text: str, env: dict[str, str] | None = None) -> Any:
    loaded = load_text(text, "t.yaml")
    return Interpolator(loaded.data, loaded.origins, env or {}).resolve()


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


# --- the predecessor's resolvers that oc.eval cannot express ---


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("${oc.slurmtime:3600}", "0-1:0:0"),
        ("${oc.slurmtime:90061}", "1-1:1:1"),
        ("${oc.slurmtime:${seconds}}", "0-2:0:0"),
        ("${oc.pad_iter:1000}", "iter_0001000"),
        ("${oc.pad_iter:${seconds}}", "iter_0007200"),
        ("${oc.sqrt:16}", 4.0),
        ("${oc.slice:hello,0,3}", "hel"),
        ("${oc.slice:${nodes},1,null}", ["b", "c"]),
        ("${oc.slice:${nodes},-1}", ["c"]),
        ("${oc.split:'a,b,c',','}", ["a", "b", "c"]),
        ("${oc.split:'a b  c'}", ["a", "b", "c"]),
    ],
)
def test_predecessor_resolvers(expression: str, expected: Any) -> None:
    out = resolve(f"v: {expression}\nseconds: 7200\nnodes: [a, b, c]\n")
    assert out["v"] == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("${oc.slurmtime:1.5}", "expected a whole number of seconds, got 1.5"),
        ("${oc.slurmtime:-1}", "expected a whole number of seconds, got -1"),
        ("${oc.pad_iter:abc}", "expected a number, got 'abc'"),
        ("${oc.sqrt:-4}", "the square root of a negative number"),
        ("${oc.split:'a,b',''}", "the separator cannot be empty"),
        ("${oc.slice:5,0}", "takes a string or list"),
    ],
)
def test_predecessor_resolvers_refuse_bad_arguments(expression: str, message: str) -> None:
    problem = error(f"x:\n  v: {expression}\n").problems[0]
    assert message in problem.message
    assert problem.origin is not None and (problem.origin.line, problem.origin.col) == (2, 3)


def test_timestring_needs_source_date_epoch() -> None:
    problem = error("v: job_${oc.timestring:}\n").problems[0]
    assert "every compile a different bundle" in problem.message
    assert problem.hint is not None and "SOURCE_DATE_EPOCH" in problem.hint
    out = resolve("v: job_${oc.timestring:}\n", {"SOURCE_DATE_EPOCH": "1700000000"})
    assert out["v"] == "job_20231114_221320_000"


def test_exclude_nodes_reads_a_node_list(tmp_path: Path) -> None:
    nodes = tmp_path / "exclude.txt"
    nodes.write_text("# bad\nlrdn0417\n\nlrdn0001, lrdn0002\nlrdn0417 # again\n")
    out = resolve(f"v: ${{oc.exclude_nodes:{nodes}}}\n")
    assert out["v"] == "lrdn0417,lrdn0001,lrdn0002"
    nodes.write_text("# nothing yet\n")
    assert resolve(f"v: ${{oc.exclude_nodes:{nodes}}}\n")["v"] is None
    assert resolve(f"v: ${{oc.exclude_nodes:{tmp_path}/missing.txt}}\n")["v"] is None
    problem = error("v: ${oc.exclude_nodes:exclude.txt}\n").problems[0]
    assert "is relative" in problem.message


def test_exclude_nodes_in_a_directive(tmp_path: Path) -> None:
    nodes = write(tmp_path / "bad_nodes.txt", "n1\nn2, n3\n")
    exp = write(
        tmp_path / "exp.yaml",
        f"""
        # @package _global_
        project: {{name: demo}}
        backend:
          bash: {{command: "true"}}
        slurm:
          sbatch:
            exclude: ${{oc.exclude_nodes:{nodes}}}
            time: ${{oc.slurmtime:5400}}
        """,
    )
    script = compile_file(exp).files["jobs/demo.sbatch"].decode()
    assert "#SBATCH --exclude=n1,n2,n3\n" in script
    assert "#SBATCH --time=0-1:30:0\n" in script
    nodes.unlink()
    assert "--exclude" not in compile_file(exp).files["jobs/demo.sbatch"].decode()
