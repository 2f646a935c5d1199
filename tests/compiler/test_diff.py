"""Comparing bundles: jobs added, removed, changed and renamed, on bundles compiled from small
experiments; the text output is a reviewed snapshot."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler.diff import ABSENT, BundleDiff, ValueChange, compare
from oellm.compiler.diff_render import check_text, render_json, render_text
from oellm.compiler.errors import ConfigError
from oellm.compiler.textdiff import unified
from tests.helpers import compile_file, write

# Two stages over two learning rates; eval waits for its train sibling's marker file.
EXPERIMENT = """
# @package _global_
project:
  name: exp
job:
  name: "@PREFIX@_${vars.lr}_${stage}"
vars:
  steps: 100
backend:
  bash:
    command: "train --lr ${vars.lr} --steps ${vars.steps}"
sweep:
  type: list
  groups:
    - params:
        vars.lr: @LRS@
      defaults:
        stage: train
    - params:
        vars.lr: @LRS@
      defaults:
        stage: eval
      job.start_conditions:
        - class_name: FileExistsCondition
          path: "\\\\${sibling.train.output_dir}/done.txt"
"""


def bundle(
    tmp_path: Path, *overrides: str, prefix: str = "exp", lrs: str = "[1, 2]"
) -> dict[str, bytes]:
    text = EXPERIMENT.replace("@PREFIX@", prefix).replace("@LRS@", lrs)
    digest = hashlib.sha256(repr((text, overrides)).encode()).hexdigest()[:12]
    # One folder per variant, the same file name: the lockfile records the experiment's path.
    path = write(tmp_path / digest / "exp.yaml", text)
    return compile_file(path, overrides, env={}).files


def names(entries: Any) -> list[str]:
    return [e.name for e in entries]


def test_identical_bundles_have_no_differences(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path), bundle(tmp_path))
    assert result.identical
    assert (result.added, result.removed, result.changed, result.renamed) == ((), (), (), ())
    assert result.unchanged == 4 and result.files == ()
    assert render_text(result) == "bundles are identical: 4 jobs\n"
    assert render_json(result)["identical"] is True


def test_param_change_shows_old_and_new_value_and_script_diff(tmp_path: Path) -> None:
    old = bundle(tmp_path, "vars.steps=100")
    new = bundle(tmp_path, "vars.steps=200")
    result = compare(old, new)
    assert not result.identical
    assert names(result.changed) == ["exp_1_train", "exp_2_train", "exp_1_eval", "exp_2_eval"]
    job = result.changed[0]
    assert job.params == (ValueChange("vars.steps", 100, 200),)
    assert job.fields == () and job.rename is None
    assert job.script_changed
    assert "-oellm_command='train --lr 1 --steps 100'" in job.script_diff
    assert "+oellm_command='train --lr 1 --steps 200'" in job.script_diff
    assert job.script_diff.startswith("--- a/jobs/exp_1_train.sbatch\n+++ b/jobs/")
    assert result.unchanged == 0


def test_a_key_set_on_one_side_only_is_absent_on_the_other(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path), bundle(tmp_path, "vars.steps=200"))
    change = result.changed[0].params[0]
    assert (change.key, change.old, change.new) == ("vars.steps", ABSENT, 200)
    shown = render_json(result)["changed"][0]["params"][0]
    assert shown == {"key": "vars.steps", "new": 200}
    assert "vars.steps: (unset) -> 200" in render_text(result)


def test_added_and_removed_jobs(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path, lrs="[1, 2]"), bundle(tmp_path, lrs="[1, 3]"))
    assert names(result.added) == ["exp_3_train", "exp_3_eval"]
    assert names(result.removed) == ["exp_2_train", "exp_2_eval"]
    assert result.added[0].params == {"stage": "train", "vars.lr": 3}
    assert result.added[1].stage == "eval"
    assert result.changed == () and result.unchanged == 2
    statuses = {f.name: f.status for f in result.files}
    assert statuses["jobs/exp_3_train.sbatch"] == "added"
    assert statuses["jobs/exp_2_train.sbatch"] == "removed"
    assert statuses["plan.lock.json"] == statuses["plan.txt"] == "changed"


def test_lock_fields_that_change_are_reported(tmp_path: Path) -> None:
    old = bundle(tmp_path)
    new = bundle(tmp_path, "job.chain_repeat=3")
    result = compare(old, new)
    job = result.changed[0]
    assert job.fields == (ValueChange("chain_repeat", 1, 3),)
    assert not job.script_changed and job.script_diff == ""
    assert "  chain_repeat: 1 -> 3\n" in render_text(result)


def test_same_script_and_params_under_a_new_name_is_a_rename(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path, prefix="exp"), bundle(tmp_path, prefix="run"))
    assert (result.added, result.removed, result.changed) == ((), (), ())
    assert [(j.old_name, j.name, j.rename) for j in result.renamed] == [
        ("exp_1_train", "run_1_train", "detected"),
        ("exp_2_train", "run_2_train", "detected"),
        ("exp_1_eval", "run_1_eval", "detected"),
        ("exp_2_eval", "run_2_eval", "detected"),
    ]
    train, _, evaluation, _ = result.renamed
    # A rename moves the outputs: that is shown, not hidden.
    assert ValueChange("output_dir", "./output/exp_1_train", "./output/run_1_train") in train.fields
    assert [c.key for c in evaluation.fields] == [
        "depends_on",
        "log_path",
        "log_path_current",
        "output_dir",
        "start_conditions",
    ]
    assert (
        "renamed exp_1_train -> run_1_train (stage train; same params and script up to the name)"
        in render_text(result)
    )


def test_a_rename_with_another_change_needs_moved(tmp_path: Path) -> None:
    old = bundle(tmp_path, "vars.steps=100", prefix="exp")
    new = bundle(tmp_path, "vars.steps=200", prefix="run")
    plain = compare(old, new)
    assert plain.renamed == () and len(plain.added) == len(plain.removed) == 4

    result = compare(old, new, moved={"exp_1_train": "run_1_train"})
    assert [(j.old_name, j.name, j.rename) for j in result.renamed] == [
        ("exp_1_train", "run_1_train", "moved")
    ]
    moved = result.renamed[0]
    assert moved.params == (ValueChange("vars.steps", 100, 200),)
    assert moved.script_diff.startswith(
        "--- a/jobs/exp_1_train.sbatch\n+++ b/jobs/run_1_train.sbatch\n"
    )
    assert "exp_1_train" not in names(result.removed)
    assert "run_1_train" not in names(result.added)


def test_moves_that_do_not_apply_are_reported_not_applied(tmp_path: Path) -> None:
    old, new = bundle(tmp_path, prefix="exp"), bundle(tmp_path, prefix="run")
    result = compare(
        old,
        new,
        moved={
            "nope": "run_1_train",
            "exp_1_train": "nope",
        },
    )
    assert [(m.old, m.new) for m in result.ignored_moves] == [
        ("exp_1_train", "nope"),
        ("nope", "run_1_train"),
    ]
    assert "the new bundle has no job 'nope'" in result.ignored_moves[0].reason
    assert "the old bundle has no job 'nope'" in result.ignored_moves[1].reason
    assert len(result.renamed) == 4  # detection still pairs them
    assert "moved nope -> run_1_train ignored" in render_text(result)

    applied_long_ago = compare(new, new, moved={"exp_1_train": "run_1_train"})
    assert applied_long_ago.identical
    assert "already applied" in applied_long_ago.ignored_moves[0].reason


def test_renames_recorded_in_the_new_lockfile_apply(tmp_path: Path) -> None:
    old = bundle(tmp_path, "vars.steps=100", prefix="exp")
    new = bundle(tmp_path, "vars.steps=200", prefix="run")
    lock = json.loads(new["plan.lock.json"])
    recorded = {"exp_1_train": "run_1_train", "older": "exp_2_train"}
    lock["moved"] = recorded
    new["plan.lock.json"] = json.dumps(lock).encode()
    result = compare(old, new)
    assert [(j.old_name, j.name, j.rename) for j in result.renamed] == [
        ("exp_1_train", "run_1_train", "moved")
    ]
    assert result.ignored_moves == ()  # history that no longer applies is not news
    assert result.lock_fields == (ValueChange("moved", ABSENT, recorded),)
    assert 'lock moved: (unset) -> {"exp_1_train": "run_1_train"' in render_text(result)


def test_two_jobs_moved_to_one_name_is_an_error(tmp_path: Path) -> None:
    old = bundle(tmp_path)
    with pytest.raises(ConfigError, match="both move to 'x'"):
        compare(old, old, moved={"exp_1_train": "x", "exp_2_train": "x"})


def test_reordered_sweep_values_change_no_job(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path, lrs="[1, 2]"), bundle(tmp_path, lrs="[2, 1]"))
    assert (result.added, result.removed, result.changed, result.renamed) == ((), (), (), ())
    assert result.unchanged == 4 and result.reordered == 4
    assert not result.identical  # the lockfile's order and indexes did change
    text = render_text(result)
    assert "4 jobs changed position in the sweep" in text
    # Each job's resolved config holds its sweep index too.
    assert "files that differ: jobs/exp_1_eval.config.json," in text
    assert text.rstrip().endswith("plan.lock.json, plan.txt")


def test_project_change(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path), bundle(tmp_path, "project.name=other"))
    assert ValueChange("name", "exp", "other") in result.project
    assert 'project.name: "exp" -> "other"' in render_text(result)


def test_no_old_bundle_means_every_job_is_added(tmp_path: Path) -> None:
    result = compare({}, bundle(tmp_path))
    assert len(result.added) == 4 and result.unchanged == 0
    assert {f.status for f in result.files} == {"added"}
    text = check_text(result)
    assert "--- /dev/null\n+++ b/plan.lock.json\n" in text


def test_damaged_lockfile_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"old bundle's plan\.lock\.json cannot be read"):
        compare({"plan.lock.json": b"{not json"}, bundle(tmp_path))


def test_check_text_diffs_every_differing_file(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path, lrs="[1, 2]"), bundle(tmp_path, lrs="[1, 3]"))
    text = check_text(result)
    assert text.startswith("bundles differ: 2 added, 2 removed, 0 changed, 0 renamed")
    for name in ("plan.lock.json", "plan.txt", "jobs/exp_3_train.sbatch"):
        assert f"+++ b/{name}\n" in text
    assert "--- a/jobs/exp_2_eval.sbatch\n+++ /dev/null\n" in text


def test_json_shape(tmp_path: Path) -> None:
    old = bundle(tmp_path, "vars.steps=100", lrs="[1, 2]")
    new = bundle(tmp_path, "vars.steps=200", lrs="[1, 3]")
    shown = render_json(compare(old, new))
    json.dumps(shown)  # serialisable as it is
    assert list(shown) == [
        "schema_version",
        "identical",
        "summary",
        "project",
        "lock",
        "added",
        "removed",
        "renamed",
        "changed",
        "ignored_moves",
        "files",
    ]
    assert shown["summary"] == {
        "added": 2,
        "removed": 2,
        "changed": 2,
        "renamed": 0,
        "unchanged": 0,
        "reordered": 0,
    }
    changed = shown["changed"][0]
    assert set(changed) == {
        "name",
        "old_name",
        "stage",
        "rename",
        "script",
        "old_script",
        "params",
        "fields",
        "script_changed",
        "script_diff",
    }
    assert changed["params"] == [{"key": "vars.steps", "old": 100, "new": 200}]
    assert shown["added"][0] == {
        "name": "exp_3_train",
        "stage": "train",
        "script": "jobs/exp_3_train.sbatch",
        "params": {"stage": "train", "vars.lr": 3, "vars.steps": 200},
    }


def test_values_compare_as_json_not_as_python() -> None:
    def lock(value: Any) -> dict[str, bytes]:
        job = {"name": "j", "script": "jobs/j.sbatch", "params": {"p": value}}
        data = json.dumps({"project": {}, "jobs": [job]}).encode()
        return {"plan.lock.json": data, "jobs/j.sbatch": b"echo\n"}

    assert compare(lock(1), lock(True)).changed[0].params == (ValueChange("p", 1, True),)
    assert compare(lock(1), lock(1.0)).changed[0].params == (ValueChange("p", 1, 1.0),)


def test_unified_marks_a_missing_final_newline_and_binary_files() -> None:
    assert unified(b"a\n", b"a\n", "f", "f") == ""
    assert unified(b"a\n", b"a", "f", "f") == (
        "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+a\n\\ No newline at end of file\n"
    )
    assert unified(b"a\rb\n", b"a\rc\n", "f", "f").endswith("-a\rb\n+a\rc\n")
    assert unified(b"\xff", b"\xfe", "f", "f") == "Binary files a/f and b/f differ\n"


def test_color_only_when_asked(tmp_path: Path) -> None:
    result = compare(bundle(tmp_path, "vars.steps=100"), bundle(tmp_path, "vars.steps=200"))
    assert "\x1b[" not in render_text(result)
    colored = render_text(result, color=True)
    assert "\x1b[32m+oellm_command=" in colored and "\x1b[31m-oellm_command=" in colored


def _mixed(tmp_path: Path) -> BundleDiff:
    """One of each: an added, a removed, a changed and a moved job."""
    old = bundle(tmp_path, "vars.steps=100", lrs="[1, 2]")
    new = bundle(tmp_path, "vars.steps=100", "job.chain_repeat=2", lrs="[1, 3]")
    return compare(old, new, moved={"exp_2_eval": "exp_3_eval"})


def test_text_snapshot(tmp_path: Path, text_snapshot: Any) -> None:
    assert render_text(_mixed(tmp_path)) == text_snapshot


def test_check_text_snapshot(tmp_path: Path, text_snapshot: Any) -> None:
    old = bundle(tmp_path, "vars.steps=100")
    new = bundle(tmp_path, "vars.steps=200", lrs="[1, 2, 3]")
    assert check_text(compare(old, new)) == text_snapshot
