"""`oellm config` and `oellm schema` in-process: output, origins, exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from oellm.cli import main
from tests.helpers import EXAMPLES, write


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


SWEEP = """
project: {name: c}
backend: {bash: {command: "echo ${vars.note}"}}
job: {name: "c_${vars.x}_${stage}"}
vars:
  x: 0
  note: plain
sweep:
  type: list
  groups:
    - params: {vars.x: [1, 2]}
      defaults: {stage: a}
    - params: {vars.x: [1, 2]}
      defaults: {stage: b, vars.note: "\\\\${sibling.a.job.base_output_dir}/ckpt"}
"""


def test_config_prints_the_composed_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", SWEEP)
    code, out, err = run(["config", str(exp), "vars.note=changed"], capsys)
    assert (code, err) == (0, "")
    data = YAML(typ="safe").load(out)
    # Composed, not resolved: the root's choices are merged, interpolations stay as written.
    assert data["vars"]["note"] == "changed"
    assert data["job"]["name"] == "c_${vars.x}_${stage}"
    assert data["slurm"]["template"] == "base.sbatch.j2"
    assert "sweep" in data


def test_config_job_is_fully_resolved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write(tmp_path / "exp.yaml", SWEEP)
    code, out, err = run(["config", str(exp), "--job", "c_2_b"], capsys)
    assert (code, err) == (0, "")
    data = YAML(typ="safe").load(out)
    assert data["vars"] == {"x": 2, "note": "./output/c_2_a/ckpt"}
    assert data["job"]["name"] == "c_2_b"
    assert data["stage"] == "b"
    assert "sweep" not in data and "sibling" not in data


def test_show_origin_names_file_line_col_of_each_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", SWEEP)
    code, out, _ = run(["config", str(exp), "--job", "c_1_b", "--show-origin"], capsys)
    assert code == 0
    lines = out.splitlines()

    def comment(prefix: str) -> str:
        line = next(x for x in lines if x.strip().startswith(prefix))
        return line.split("# ", 1)[1]

    def at(line: int, text: str) -> str:
        col = exp.read_text().splitlines()[line - 1].index(text) + 1
        return f"{exp}:{line}:{col}"

    # The swept value: where the sweep wrote it; the sibling-derived note: its sweep entry.
    assert comment("x: 1") == at(12, "1, 2]")
    assert comment("note: ./output/c_1_a/ckpt") == at(13, "vars.note")
    assert comment("name: c_1_b") == at(3, "name")
    assert re.fullmatch(r"<oellm>/config/slurm/local\.yaml:\d+:\d+", comment("template:"))
    # Still YAML: the comments do not change the values.
    assert YAML(typ="safe").load(out)["vars"]["x"] == 1


def test_unknown_job_has_did_you_mean_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", SWEEP)
    code, out, err = run(["config", str(exp), "--job", "c_2_bb"], capsys)
    assert code == 2 and out == ""
    assert "no job 'c_2_bb'" in err and "did you mean 'c_2_b'?" in err
    assert "Traceback" not in err


def test_bad_config_is_the_usual_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write(
        tmp_path / "exp.yaml", "project: {name: x}\nbackend: {bash: {command: hi, ex: 1}}\n"
    )
    code, out, err = run(["config", str(exp), "--job", "x"], capsys)
    assert code == 2 and out == ""
    assert f"{exp}:2:" in err and "'ex'" in err


@pytest.mark.parametrize(
    ("flag", "title"),
    [
        ([], "oellm experiment file (as written)"),
        (["--authoring"], "oellm experiment file (as written)"),
        (["--authoring", "--group", "slurm"], "oellm config group file: slurm/"),
        (["--resolved"], "oellm experiment config"),
        (["--lock"], "oellm plan lockfile, version 1"),
    ],
)
def test_schema_prints_each_schema(
    flag: list[str], title: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["schema", *flag], capsys)
    assert code == 0
    assert json.loads(out)["title"] == title


def test_schema_group_needs_authoring(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["schema", "--lock", "--group", "slurm"], capsys)
    assert code == 2 and "--group goes with --authoring" in err


def test_config_ref_works(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["config", "--config-ref", "experiments/demo"], capsys)
    assert code == 0
    assert YAML(typ="safe").load(out)["project"]["name"] == "demo"
    assert (EXAMPLES / "demo.yaml").is_file()
