"""`${sibling.STAGE.KEY}` reads any resolved key of the sibling job, as the predecessor's
configs do (`sibling.stable.backend.megatron.save`, `sibling.stable.job.base_output_dir`)."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest

from oellm.compiler import resolve
from tests.helpers import compile_error, compile_file, rendered, write

HEAD = """
project: {name: s}
backend: {bash: {command: "echo ${vars.note}"}}
job: {name: "s_${vars.x}_${stage}"}
vars: {x: 0, note: "", iters: "${oc.eval:'100 * ${vars.x}'}", literal: "\\\\${HOME}/x"}
"""


def _exp(tmp_path: Path, sweep: str) -> Path:
    body = textwrap.indent(textwrap.dedent(sweep).strip("\n"), "  ")
    return write(tmp_path / "exp.yaml", textwrap.dedent(HEAD).lstrip("\n") + "sweep:\n" + body)


def _notes(tmp_path: Path, sweep: str) -> dict[str, str]:
    bundle = compile_file(_exp(tmp_path, sweep))
    out = {}
    for job in bundle.lock_json["jobs"]:
        script = bundle.files[job["script"]].decode()
        out[job["name"]] = _command(script)
    return out


def _command(script: str) -> str:
    line = next(x for x in script.splitlines() if x.startswith("oellm_command="))
    return shlex.split(line.removeprefix("oellm_command="))[0].removeprefix("echo ")


def test_any_resolved_key_of_the_sibling(tmp_path: Path) -> None:
    notes = _notes(
        tmp_path,
        """
        type: list
        groups:
          - params: {vars.x: [1, 2]}
            defaults: {stage: a}
          - params: {vars.x: [1, 2]}
            defaults:
              stage: b
              vars.note: "\\\\${sibling.a.vars.iters}:\\\\${sibling.a.job.base_output_dir}:\\
                \\\\${sibling.a.output_dir}"
        """,
    )
    assert notes["s_1_b"] == "100:./output/s_1_a:./output/s_1_a"
    assert notes["s_2_b"] == "200:./output/s_2_a:./output/s_2_a"


def test_sibling_value_keeps_its_type_and_literal_text_stays_text(tmp_path: Path) -> None:
    """A whole-value reference keeps the type; `${` in a finished value is not read again."""
    path = _exp(
        tmp_path,
        """
        type: list
        groups:
          - params: {vars.x: [3]}
            defaults: {stage: a}
          - params: {vars.x: [3]}
            defaults:
              stage: b
              vars.note: "\\\\${oc.eval:'\\\\${sibling.a.vars.iters} + 1'} \\
                \\\\${sibling.a.vars.literal}"
        """,
    )
    bundle = compile_file(path)
    job = next(j for j in bundle.lock_json["jobs"] if j["stage"] == "b")
    assert _command(bundle.files[job["script"]].decode()) == "301 ${HOME}/x"


def test_chain_of_three_stages_reads_through(tmp_path: Path) -> None:
    notes = _notes(
        tmp_path,
        """
        type: list
        groups:
          - params: {vars.x: [1]}
            defaults: {stage: a, vars.note: first}
          - params: {vars.x: [1]}
            defaults: {stage: b, vars.note: "\\\\${sibling.a.vars.note}+b"}
          - params: {vars.x: [1]}
            defaults: {stage: c, vars.note: "\\\\${sibling.b.vars.note}+c"}
        """,
    )
    assert notes["s_1_c"] == "first+b+c"


def test_each_job_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _exp(
        tmp_path,
        """
        type: list
        groups:
          - params: {vars.x: [1, 2, 3]}
            defaults: {stage: a}
          - params: {vars.x: [1, 2, 3]}
            defaults: {stage: b, vars.note: "\\\\${sibling.a.vars.iters}"}
          - params: {vars.x: [1, 2, 3]}
            defaults: {stage: c, vars.note: "\\\\${sibling.a.vars.iters}\\\\${sibling.b.vars.note}"}
        """,
    )
    calls: list[int] = []
    real = resolve.resolve_job

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args[2].index)  # type: ignore[attr-defined]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("oellm.compiler.point_work.resolve_job", counting)
    jobs = compile_file(path).lock_json["jobs"]
    assert len(jobs) == 9
    assert sorted(calls) == list(range(9))


def test_unknown_sibling_key_names_the_key_with_did_you_mean(tmp_path: Path) -> None:
    path = _exp(
        tmp_path,
        """
        type: list
        groups:
          - params: {vars.x: [1]}
            defaults: {stage: a}
          - params: {vars.x: [1]}
            defaults: {stage: b, vars.note: "\\\\${sibling.a.vars.itres}"}
        """,
    )
    text = rendered(compile_error(path))
    assert "exp.yaml:" in text
    assert "the sibling job 's_1_a' (stage 'a') 'vars' has no key 'itres'" in text
    assert "did you mean 'iters'?" in text


def test_cycle_through_sibling_keys_names_the_chain(tmp_path: Path) -> None:
    path = _exp(
        tmp_path,
        """
        type: list
        groups:
          - params: {vars.x: [1]}
            defaults: {stage: a, vars.note: "\\\\${sibling.b.vars.note}"}
          - params: {vars.x: [1]}
            defaults: {stage: b, vars.note: "\\\\${sibling.a.vars.note}"}
        """,
    )
    text = rendered(compile_error(path))
    assert "sibling references form a cycle" in text
    assert "stage 'a' vars.note -> ${sibling.b.vars.note}" in text
    assert "stage 'b' vars.note -> ${sibling.a.vars.note}" in text


def test_three_stage_cycle_follows_the_keys(tmp_path: Path) -> None:
    path = _exp(
        tmp_path,
        """
        type: list
        groups:
          - params: {vars.x: [1]}
            defaults: {stage: a, vars.note: "\\\\${sibling.c.vars.iters}"}
          - params: {vars.x: [1]}
            defaults: {stage: b, vars.note: "\\\\${sibling.a.vars.note}"}
          - params: {vars.x: [1]}
            defaults: {stage: c, vars.iters: "\\\\${sibling.b.vars.note}"}
        """,
    )
    text = rendered(compile_error(path))
    chain = text.split("cycle: ", 1)[1].split("\n")[0]
    links = chain.split(", then ")
    assert len(links) == 3
    # Each link reads the key the one before it names.
    for before, after in zip(links, [*links[1:], links[0]], strict=True):
        field = before.split("${sibling.", 1)[1].rstrip("}").split(".", 1)[1]
        assert after.split(" ")[2] == field


@pytest.mark.parametrize(
    ("sweep", "base"),
    [
        # No sibling anywhere: no point is read.
        ({"params": {"vars.a": [1, 2]}}, {}),
        # Named in the sweep's values, in a nested list.
        (
            {
                "type": "list",
                "groups": [
                    {"params": {"vars.a": [1]}, "defaults": {"stage": "s"}},
                    {
                        "params": {"vars.a": [1]},
                        "defaults": {"stage": "d", "vars.n": ["x", "${sibling.s.output_dir}"]},
                    },
                ],
            },
            {},
        ),
        # Named only in the base config: every point that does not set that key.
        ({"params": {"vars.a": [1, 2]}}, {"vars": {"n": "${sibling.s.output_dir}"}}),
        # Named in the base, and set by the sweep for some points.
        (
            {
                "type": "list",
                "groups": [{"params": {"vars.n": ["own"]}}, {"params": {"vars.a": [3]}}],
            },
            {"vars": {"n": "${sibling.s.output_dir}"}},
        ),
    ],
)
def test_point_references_are_those_each_point_makes(sweep: dict, base: dict) -> None:
    from oellm.compiler.expand import expand
    from oellm.compiler.siblings import base_references, point_references, references

    points = expand(sweep, lambda rel: None)
    base_refs = base_references(base, {})
    every = {p.index: made for p in points if (made := references(p, base_refs))}
    assert point_references(points, sweep, base_refs) == every
    assert bool(every) == ("sibling." in repr(sweep) + repr(base))
