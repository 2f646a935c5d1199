"""A job's config made from the first job's of its swept keys (`compiler/leaves.py`) is the
config the resolver gives it: the same bundle, byte for byte, and the same errors, with their
positions, for jobs that fail where the first one did not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler import leaves, resolve
from oellm.compiler.errors import ConfigError
from tests.helpers import EXAMPLES, compile_file, rendered, write

EXAMPLES_DEMO = EXAMPLES / "demo.yaml"


def _resolver_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "plan", lambda *args: None)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each job after a model was made from it (True) or left to the resolver."""
    made: list[bool] = []
    real = leaves.Leaves.config

    def spying(self: leaves.Leaves, *args: Any) -> dict[str, Any] | None:
        config = real(self, *args)
        made.append(config is not None)
        return config

    monkeypatch.setattr(leaves.Leaves, "config", spying)
    return made


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, list[bool]]:
    """The outcome (the bundle's files and lock, or the error's text) with plans and without."""

    def outcome() -> Any:
        try:
            bundle = compile_file(path, env={})
        except ConfigError as error:
            return rendered(error)
        return dict(bundle.files), bundle.lock

    with monkeypatch.context() as patch:
        made = _counting(patch)
        planned = outcome()
    with monkeypatch.context() as patch:
        _resolver_only(patch)
        alone = outcome()
    return planned, alone, made


SWEEP = """
project: {name: leaves}
job:
  name: "l_${vars.a}_${vars.b}"
  log_path: "/logs/${.name}/${vars.tail}.log"
backend:
  bash: {command: "echo ${vars.a} ${vars.b} ${vars.both} ${vars.fixed} ${index} ${vars.kinds}"}
vars:
  a: 0
  b: x
  both: "${vars.a}-${.b}"
  tail: "${vars.both}"
  fixed: constant
  list: ["${vars.a}", 2]
  # Constants of every kind read by a dependent value.
  f: 1.5e-4
  t: true
  nothing: null
  big: 123456789012345678
  kinds: "${vars.a}|${vars.f}|${vars.t}|${vars.nothing}|${vars.big}|${vars.list.1}"
sweep:
  type: list
  groups:
    - params: {vars.a: [1, 2, 3], vars.b: [x, y]}
    - params: {vars.b: [z, w]}
    - params: {vars.a: [4, 5.5, -0.0, true], vars.b: [v]}
"""


def test_jobs_made_from_a_model_are_the_jobs_the_resolver_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned, alone, made = _both(write(tmp_path / "exp.yaml", SWEEP), monkeypatch)
    assert not isinstance(planned, str), planned
    assert planned == alone
    assert len(planned[1].jobs) == 12
    # Every job but the first of each set of swept keys (the first and last groups share one).
    assert made.count(True) == 12 - 2


HOSTILE = [
    "'x y'",
    '"quote \' \\" and \\\\ backslash"',
    '"line\\nbreak\\ttab"',
    "ünï ✓",
    "1.5e-4",
    "null",
    "false",
    "9007199254740993",
    '"\\\\${vars.fixed}"',  # a template the job resolves: left to the resolver
    "{k: v}",  # a mapping: left to the resolver
    "[1, 2]",
    '"$HOME here"',
    '"\ue000" ',
    "'-rf /'",
    "''",
]


def test_hostile_swept_values_give_the_same_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = ", ".join(HOSTILE)
    path = write(
        tmp_path / "exp.yaml",
        f"""
        project: {{name: hostile}}
        job: {{name: "h_${{index}}"}}
        backend: {{bash: {{command: "printf %s ${{vars.v}} '${{vars.v}}' ${{vars.fixed}}"}}}}
        vars: {{v: 0, fixed: constant, copy: "${{vars.v}}"}}
        sweep: {{type: list, groups: [{{params: {{vars.v: [{values}]}}}}]}}
        """,
    )
    planned, alone, made = _both(path, monkeypatch)
    assert not isinstance(planned, str), planned
    assert planned == alone
    assert len(planned[1].jobs) == len(HOSTILE)
    assert made.count(False) == 4  # the template, the mapping, the list, `$HOME`
    configs = [planned[0][f"jobs/h_{n}.config.json"] for n in range(len(HOSTILE))]
    assert b'"copy": "\\u00fcn\\u00ef \\u2713"' not in configs[3]  # written as text, unescaped
    assert '"copy": "ünï ✓"'.encode() in configs[3]


@pytest.mark.parametrize(
    ("job", "values", "where"),
    [
        # One key: the error is at the swept value, where the resolver finds it.
        ('name: "${vars.n}"', '[ok, fine, "bad name!"]', "exp.yaml:6:"),
        # Text around the key: at the template.
        ('name: "j_${vars.n}"', '[ok, fine, "bad name!"]', "exp.yaml:2:"),
        ('{name: "j_${index}", chain_repeat: "${vars.n}"}', "[1, 2, many]", "exp.yaml:6:"),
        # Values only the swept key holds: the model had none of them.
        ('name: "j_${index}"', '[ok, fine, "???"]', "exp.yaml:6:"),
        ('name: "j_${index}"', '[ok, fine, "a\\0b"]', "exp.yaml:6:"),
    ],
)
def test_a_value_that_fails_for_a_later_job_only_reads_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: str, values: str, where: str
) -> None:
    body = job if job.startswith("{") else "{" + job + "}"
    path = write(
        tmp_path / "exp.yaml",
        f"""
        project: {{name: checks}}
        job: {body}
        backend: {{bash: {{command: "echo ${{vars.n}}"}}}}
        vars: {{n: x}}
        sweep:
          grids: [{{vars.n: {values}}}]
        """,
    )
    planned, alone, made = _both(path, monkeypatch)
    assert isinstance(planned, str), "the third job must fail"
    assert planned == alone
    assert where in planned, planned
    assert True in made  # the failing job was made from the model


def test_a_value_past_the_text_limit_for_one_job_is_the_resolvers_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = "x" * 100_000  # eleven times: past the limit
    path = write(
        tmp_path / "exp.yaml",
        f"""
        project: {{name: big}}
        job: {{name: "b_${{index}}"}}
        backend: {{bash: {{command: "echo ${{vars.twice}}"}}}}
        vars: {{v: 0, twice: "{"${vars.v}" * 11}"}}
        sweep: {{grids: [{{vars.v: [small, {big}]}}]}}
        """,
    )
    planned, alone, made = _both(path, monkeypatch)
    assert isinstance(planned, str) and planned == alone
    assert "larger than 1,000,000 characters" in planned
    assert made == [False]


def test_values_read_through_calls_or_mappings_are_left_to_the_resolver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "exp.yaml",
        """
        project: {name: calls}
        job: {name: "c_${vars.x}"}
        backend: {bash: {command: "echo ${oc.eval:'2 * ${vars.x}'} ${vars.block.a}"}}
        vars: {x: 1, block: {a: "${vars.x}"}}
        sweep: {grids: [{vars.x: [1, 2, 3]}]}
        """,
    )
    planned, alone, made = _both(path, monkeypatch)
    assert planned == alone and not isinstance(planned, str)
    assert made == []  # no plan for these keys


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        # A dependent value the schema takes and a check refuses (the #SBATCH line).
        (
            """
            project: {name: checks}
            job: {name: "j_${index}", log_path: "/logs/${vars.n}.log"}
            backend: {bash: {command: "echo ${vars.n}"}}
            vars: {n: x}
            sweep: {grids: [{vars.n: [ok, fine, 'a"b']}]}
            """,
            "exp.yaml:2:",
            "cannot be written on an #SBATCH line",
        ),
        # A swept SLURM value: the checks that read `slurm` run for each job.
        (
            """
            project: {name: checks}
            job: {name: "j_${index}"}
            backend: {bash: {command: "echo ${index}"}}
            slurm:
              sbatch: {partition: main, time: "1:00:00"}
              limits: {max_time: {main: "2:00:00"}}
            sweep: {grids: [{slurm.sbatch.time: ["0:10:00", "1:00:00", "3:00:00"]}]}
            """,
            "exp.yaml:7:",
            "time limit 3:00:00 is above the partition main maximum of 02:00:00",
        ),
    ],
)
def test_a_check_that_fails_for_a_later_job_only_reads_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: str, message: str
) -> None:
    planned, alone, made = _both(write(tmp_path / "exp.yaml", text), monkeypatch)
    assert isinstance(planned, str), "the third job must fail"
    assert planned == alone
    assert where in planned and message in planned, planned
    assert made == [True, True]  # the failing job was made from the model


def test_checks_that_read_only_unchanged_parts_are_not_run_again() -> None:
    from oellm.compiler import checks

    model = compile_file(EXAMPLES_DEMO, env={})  # any valid config will do
    config = json.loads(model.files[f"jobs/{model.lock.jobs[0].name}.config.json"])
    gathered, in_order = checks.checks_for(config, {"job"})
    names = {c.__name__ for c in (*gathered, *in_order)}
    assert {"safe_name", "directive_values", "one_restart_owner"} <= names
    assert "template" not in names and "slurm_option_names" not in names
    everything = checks.checks_for(config, set(config))
    assert everything == (checks.GATHERED, checks.IN_ORDER)


def test_a_check_that_reads_the_whole_config_runs_for_every_job() -> None:
    import copy

    from oellm.compiler import checks

    config = {"job": {"name": "x"}, "slurm": {"a": 1}, "other": [1]}

    def whole(read: Any) -> Any:
        def check(config: Any, origins: Any) -> Any:
            read(config)
            return iter(())

        return check

    readers = [
        lambda c: json.dumps(c, default=str),
        lambda c: copy.deepcopy(c),
        lambda c: dict(c),
        lambda c: list(c.items()),
        lambda c: c == {},
        lambda c: c["job"],
        lambda c: c.get("job"),
        lambda c: "job" in c,
    ]
    original = (checks.GATHERED, checks.IN_ORDER)
    try:
        for reader in readers:
            checks.GATHERED, checks.IN_ORDER = (whole(reader),), ()
            assert checks.checks_for(config, {"job"})[0], reader
            checks.GATHERED, checks.IN_ORDER = (whole(lambda c: c["slurm"]),), ()
            assert not checks.checks_for(config, {"job"})[0]
    finally:
        checks.GATHERED, checks.IN_ORDER = original


ARRAYS = [
    # An array member's log path is the array's: the model's `job.log_path` left out.
    SWEEP.replace('  log_path: "/logs/${.name}/${vars.tail}.log"\n', "") + "slurm: {array: true}\n",
    # Members in two stages (two arrays, two log paths).
    """
    project: {name: staged}
    job: {name: "s_${stage}_${vars.v}"}
    backend: {bash: {command: "echo ${vars.v} ${stage}"}}
    vars: {v: 0}
    stage: one
    slurm: {array: true}
    sweep: {grids: [{vars.v: [1, 2], stage: [one, two.b+c]}]}
    """,
]


@pytest.mark.parametrize(
    ("job", "where"),
    [
        ('name: "j_${vars.n}"', "exp.yaml:2:"),  # the name check, for a later member
        ('name: "j_${index}", log_path_current: "/l/${vars.n}"', "exp.yaml:7:"),  # the schema
    ],
)
def test_an_array_member_that_fails_where_the_model_did_not_reads_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: str, where: str
) -> None:
    path = write(
        tmp_path / "exp.yaml",
        f"""
        project: {{name: checks}}
        job: {{{job}}}
        backend: {{bash: {{command: "echo ${{vars.n}}"}}}}
        vars: {{n: x}}
        slurm: {{array: true}}
        sweep:
          grids: [{{vars.n: [ok, fine, "bad name!\\0"]}}]
        """,
    )
    planned, alone, made = _both(path, monkeypatch)
    assert isinstance(planned, str), "the third job must fail"
    assert planned == alone
    assert where in planned, planned
    assert made == [True, True]


@pytest.mark.parametrize("text", ARRAYS, ids=["sweep", "stages"])
def test_array_members_made_from_a_model_are_the_members_the_resolver_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    members = _members(monkeypatch)
    planned, alone, made = _both(write(tmp_path / "exp.yaml", text), monkeypatch)
    assert not isinstance(planned, str), planned
    assert planned == alone
    assert planned[1].arrays and all(j.array_group for j in planned[1].jobs)
    assert made and all(made) and len(members) == made.count(True)


def test_hostile_values_of_array_members_give_the_same_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = ", ".join([*HOSTILE, '"\ue0000\ue001"', '"\ue001 \\u0000x"'])
    path = write(
        tmp_path / "exp.yaml",
        f"""
        project: {{name: hostile}}
        job: {{name: "h_${{index}}"}}
        backend: {{bash: {{command: "printf %s ${{vars.v}} '${{vars.v}}' $(id)"}}}}
        vars: {{v: 0, fixed: constant, copy: "${{vars.v}}"}}
        slurm: {{array: true}}
        sweep: {{type: list, groups: [{{params: {{vars.v: [{values}]}}}}]}}
        """,
    )
    members = _members(monkeypatch)
    planned, alone, _ = _both(path, monkeypatch)
    assert planned == alone
    assert isinstance(planned, str) and "NUL character" in planned  # the last value
    path.write_text(path.read_text().replace(', "\ue001 \\u0000x"', ""))
    members.clear()
    planned, alone, made = _both(path, monkeypatch)
    assert not isinstance(planned, str), planned
    assert planned == alone
    assert len(planned[1].jobs) == len(HOSTILE) + 1
    # All but the model and the four values left to the resolver.
    assert len(members) == made.count(True) == len(HOSTILE) + 1 - 1 - 4


def _members(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The values of each array member made from a model as a member."""
    from oellm.compiler import array_groups

    seen: list[object] = []
    real = array_groups.MemberModel.values

    def spying(self: array_groups.MemberModel, *args: Any) -> list[Any]:
        values = real(self, *args)
        seen.append(values)
        return values

    monkeypatch.setattr(array_groups.MemberModel, "values", spying)
    return seen
