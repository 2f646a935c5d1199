"""A bundle records what it was compiled from (oellm's version, experiment, config dirs, config
ref, overrides, renames) and each job's resolved config; `compile --check -o BUNDLE` without an
experiment compiles it again from that record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oellm import __version__
from oellm.cli import main
from oellm.compiler import provenance
from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.errors import ReconcileError
from tests.helpers import compile_file, write

EXPERIMENT = """
# @package _global_
defaults:
  - /extra: more
project: {name: prov}
vars: {steps: 10}
backend: {bash: {command: "echo ${vars.steps} ${vars.note}"}}
"""


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    repo = tmp_path / "repo"
    experiment = write(repo / "exp" / "e.yaml", EXPERIMENT)
    conf = repo / "conf"
    write(conf / "extra" / "more.yaml", "# @package _global_\nvars: {note: from_conf}\n")
    return repo, experiment, conf


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def compile_it(
    repo: Path, experiment: Path, conf: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    bundle = repo / "bundles" / "b"
    args = ["compile", str(experiment), "-o", str(bundle), "--config-dir", str(conf)]
    code, text = run([*args, "vars.steps=20", "--moved", "old=prov"], capsys)
    assert code == 0, text
    return bundle


def test_the_lockfile_records_the_compile_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, experiment, conf = setup(tmp_path)
    bundle = compile_it(repo, experiment, conf, capsys)
    lock = json.loads((bundle / "plan.lock.json").read_text(encoding="utf-8"))
    assert lock["compiled_with"] == {
        "oellm_version": __version__,
        # Relative to the bundle's folder: the same bytes in any checkout.
        "experiment": "../../exp/e.yaml",
        "config_ref": None,
        "config_dirs": ["../../conf"],
        "overrides": ["vars.steps=20"],
        "moved": {"old": "prov"},
    }
    assert str(tmp_path) not in (bundle / "plan.lock.json").read_text(encoding="utf-8")
    # The reconciler reads a lockfile that carries the record.
    assert load_bundle(bundle).jobs[0].name == "prov"


def test_each_job_has_its_resolved_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, experiment, conf = setup(tmp_path)
    bundle = compile_it(repo, experiment, conf, capsys)
    config = json.loads((bundle / "jobs" / "prov.config.json").read_text(encoding="utf-8"))
    assert config["backend"]["bash"]["command"] == "echo 20 from_conf"
    assert config["job"]["name"] == "prov" and config["vars"] == {"steps": 20, "note": "from_conf"}


def test_check_without_an_experiment_reuses_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, experiment, conf = setup(tmp_path)
    bundle = compile_it(repo, experiment, conf, capsys)
    code, text = run(["compile", "--check", "-o", str(bundle)], capsys)
    assert (code, text) == (0, f"{bundle} is up to date\n")
    # An edit of the experiment makes the bundle stale; a compile without arguments renews it.
    experiment.write_text(EXPERIMENT.replace("echo", "printf"), encoding="utf-8")
    code, text = run(["compile", "--check", "-o", str(bundle)], capsys)
    assert code == 1 and "+oellm_command='printf 20 from_conf'" in text
    code, text = run(["compile", "-o", str(bundle)], capsys)
    assert code == 0, text
    assert run(["compile", "--check", "-o", str(bundle)], capsys)[0] == 0


def test_check_of_a_bundle_without_a_record_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, experiment, conf = setup(tmp_path)
    bundle = compile_it(repo, experiment, conf, capsys)
    lock = json.loads((bundle / "plan.lock.json").read_text(encoding="utf-8"))
    del lock["compiled_with"]
    (bundle / "plan.lock.json").write_text(json.dumps(lock), encoding="utf-8")
    code, text = run(["compile", "--check", "-o", str(bundle)], capsys)
    assert code == 2 and "records no compile arguments" in text and "hint:" in text
    code, text = run(["compile", "--check", "-o", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "give an experiment file" in text


def test_the_version_is_recorded_but_is_not_the_bundle_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "e.yaml", "project: {name: v}\nbackend: {bash: {command: 'true'}}\n")
    before = compile_file(path)
    monkeypatch.setattr(provenance, "__version__", "9.9.9")
    after = compile_file(path)
    assert after.lock_json["compiled_with"]["oellm_version"] == "9.9.9"
    assert before.lock_json["bundle_id"] == after.lock_json["bundle_id"]
    assert before.files["plan.lock.json"] != after.files["plan.lock.json"]


def test_an_unknown_field_in_the_record_is_refused_by_the_reconciler(tmp_path: Path) -> None:
    path = write(tmp_path / "e.yaml", "project: {name: v}\nbackend: {bash: {command: 'true'}}\n")
    bundle = compile_file(path)
    out = tmp_path / "b"
    for name, data in bundle.files.items():
        write_bytes = out / name
        write_bytes.parent.mkdir(parents=True, exist_ok=True)
        write_bytes.write_bytes(data)
    lock = json.loads(bundle.files["plan.lock.json"])
    lock["compiled_with"]["surprise"] = 1
    (out / "plan.lock.json").write_text(json.dumps(lock), encoding="utf-8")
    with pytest.raises(ReconcileError):
        load_bundle(out)
