"""`oellm diff` in-process: folders and git revisions, exit codes 0/1/2, and `check_bundle`
(the comparison behind `compile --check`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from ruamel.yaml import YAML

from oellm.cli import main
from oellm.compiler.errors import ConfigError
from oellm.compiler.pipeline import CompiledBundle
from oellm.compiler.write import write_bundle
from oellm.diff_cli import check_bundle, diff_command
from tests.helpers import REPO, compile_file, write

EXPERIMENT = """
# @package _global_
project:
  name: exp
job:
  name: "exp_${vars.lr}"
vars:
  steps: 100
backend:
  bash:
    command: "train --lr ${vars.lr} --steps ${vars.steps}"
sweep:
  grids:
    - vars.lr: [1, 2, 3]
"""


def compiled(root: Path, *overrides: str) -> CompiledBundle:
    return compile_file(write(root / "exp.yaml", EXPERIMENT), overrides, env={})


def diff(*args: str) -> Result:
    return CliRunner().invoke(diff_command, list(args))


def git(repo: Path, *args: str) -> str:
    settings = ["user.name=t", "user.email=t@example.org", "commit.gpgsign=false"]
    return subprocess.run(
        ["git", *(f for s in settings for f in ("-c", s)), *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with a compiled bundle committed, then recompiled with a change."""
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):  # set when run from a git hook
        monkeypatch.delenv(name, raising=False)
    git(tmp_path, "init", "-q")
    write_bundle(compiled(tmp_path, "vars.steps=100"), tmp_path / "bundle")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    write_bundle(compiled(tmp_path, "vars.steps=200"), tmp_path / "bundle")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_same_folder_is_identical(tmp_path: Path) -> None:
    write_bundle(compiled(tmp_path), tmp_path / "b")
    result = diff(str(tmp_path / "b"), str(tmp_path / "b"))
    assert (result.exit_code, result.output) == (0, "bundles are identical: 3 jobs\n")


def test_different_folders_exit_1(tmp_path: Path) -> None:
    write_bundle(compiled(tmp_path, "vars.steps=100"), tmp_path / "a")
    write_bundle(compiled(tmp_path, "vars.steps=200"), tmp_path / "b")
    result = diff(str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.exit_code == 1
    assert result.output.startswith("bundles differ: 0 added, 0 removed, 3 changed")
    assert "    vars.steps: 100 -> 200\n" in result.output
    assert "\x1b[" not in result.output  # no colors when not on a terminal


def test_json_output(tmp_path: Path) -> None:
    write_bundle(compiled(tmp_path, "vars.steps=100"), tmp_path / "a")
    write_bundle(compiled(tmp_path, "vars.steps=200"), tmp_path / "b")
    result = diff(str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert result.exit_code == 1
    shown = json.loads(result.output)
    assert shown["identical"] is False
    assert [j["name"] for j in shown["changed"]] == ["exp_1", "exp_2", "exp_3"]


def test_moved_option(tmp_path: Path) -> None:
    write_bundle(compiled(tmp_path, "vars.steps=100"), tmp_path / "a")
    write_bundle(compiled(tmp_path, "vars.steps=200", "job.name=run_${vars.lr}"), tmp_path / "b")
    result = diff(str(tmp_path / "a"), str(tmp_path / "b"), "--moved", "exp_1=run_1", "--json")
    assert result.exit_code == 1
    shown = json.loads(result.output)
    assert [(j["old_name"], j["name"], j["rename"]) for j in shown["renamed"]] == [
        ("exp_1", "run_1", "moved")
    ]
    assert [j["name"] for j in shown["added"]] == ["run_2", "run_3"]


@pytest.mark.parametrize("value", ["exp_1", "=run", "exp_1="])
def test_bad_moved_is_a_usage_error(tmp_path: Path, value: str) -> None:
    write_bundle(compiled(tmp_path), tmp_path / "b")
    result = diff(str(tmp_path / "b"), str(tmp_path / "b"), "--moved", value)
    assert result.exit_code == 2
    assert "is not OLD=NEW" in result.output


def test_a_folder_that_is_not_a_bundle_is_a_user_error(tmp_path: Path) -> None:
    write_bundle(compiled(tmp_path), tmp_path / "b")
    (tmp_path / "empty").mkdir()
    result = diff(str(tmp_path / "empty"), str(tmp_path / "b"))
    assert result.exit_code == 2
    empty = tmp_path / "empty"
    assert result.output == f"error: '{empty}' is not a bundle: it holds no plan.lock.json\n"
    assert "Traceback" not in result.output


def test_a_file_is_not_a_bundle(tmp_path: Path) -> None:
    write_bundle(compiled(tmp_path), tmp_path / "b")
    result = diff(str(tmp_path / "exp.yaml"), str(tmp_path / "b"))
    assert result.exit_code == 2
    assert "is a file, not a bundle folder" in result.output


def test_committed_bundle_against_the_folder(repo: Path) -> None:
    result = diff("HEAD:bundle", "bundle")
    assert result.exit_code == 1
    assert result.output.startswith("bundles differ: 0 added, 0 removed, 3 changed")
    assert "-oellm_command='train --lr 1 --steps 100'" in result.output
    # A bare revision means the same folder in that revision.
    assert diff("HEAD", "bundle").output == result.output
    assert diff("bundle", "HEAD").exit_code == 1


def test_revisions_on_both_sides(repo: Path) -> None:
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "second")
    result = diff("HEAD~1:bundle", "HEAD:bundle", "--json")
    assert result.exit_code == 1
    assert json.loads(result.output)["summary"]["changed"] == 3
    assert diff("HEAD:bundle", "bundle").exit_code == 0
    assert diff("HEAD~1", "HEAD:bundle").exit_code == 1


def test_from_a_subfolder(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    assert diff("HEAD", "../bundle").exit_code == 1
    assert diff("HEAD:bundle", "../bundle").exit_code == 1  # git's paths start at the top
    result = diff("HEAD:./bundle", "../bundle")
    assert result.exit_code == 2
    assert "no folder './bundle' in revision HEAD" in result.output


def test_committed_bytes_arrive_exactly(repo: Path) -> None:
    # Carriage returns and bytes that are not UTF-8 must survive the trip through git.
    script = repo / "bundle" / "jobs" / "exp_1.sbatch"
    script.write_bytes(script.read_bytes() + b"# \r\n\xff\xfe\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "edited")
    result = diff("HEAD:bundle", "bundle")
    assert (result.exit_code, result.output) == (0, "bundles are identical: 3 jobs\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["HEAD~5:bundle", "bundle"], "error: 'HEAD~5:bundle': unknown git revision 'HEAD~5'\n"),
        (["nope", "bundle"], "error: 'nope' is neither a folder nor a git revision of 'bundle'\n"),
        (["HEAD:exp.yaml", "bundle"], "error: 'HEAD:exp.yaml' is a file, not a bundle folder\n"),
    ],
)
def test_bad_revisions_are_user_errors(repo: Path, args: list[str], message: str) -> None:
    result = diff(*args)
    assert (result.exit_code, result.output) == (2, message)


def test_missing_path_in_revision_has_a_hint(repo: Path) -> None:
    result = diff("HEAD:nope", "bundle")
    assert result.exit_code == 2
    assert result.output.startswith("error: 'HEAD:nope': no folder 'nope' in revision HEAD\n")
    assert "hint: a path after ':' is relative to the top of the repository" in result.output


def test_two_bare_revisions_are_a_usage_error(repo: Path) -> None:
    result = diff("HEAD", "HEAD~1")
    assert result.exit_code == 2
    assert "a bare revision needs a bundle folder on the other side" in result.output


def test_outside_a_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    write_bundle(compiled(tmp_path / "plain"), tmp_path / "plain" / "b")
    result = diff("HEAD", str(tmp_path / "plain" / "b"))
    assert result.exit_code == 2
    assert "neither a folder nor a git revision" in result.output


def test_check_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    bundle = compiled(tmp_path, "vars.steps=100")
    fresh, text = check_bundle(bundle, out)
    assert not fresh
    assert text.startswith(f"{out} holds no bundle yet: run the same `oellm compile`")
    assert "--- /dev/null\n+++ b/plan.lock.json\n" in text

    write_bundle(bundle, out)
    assert check_bundle(bundle, out) == (True, f"{out}: up to date (3 jobs)\n")

    stale, text = check_bundle(compiled(tmp_path, "vars.steps=200"), out)
    assert not stale
    assert text.startswith(f"{out} is out of date: ")
    assert "bundles differ: 0 added, 0 removed, 3 changed, 0 renamed, 0 unchanged" in text
    for name in ("plan.lock.json", "jobs/exp_1.sbatch"):
        assert f"--- a/{name}\n+++ b/{name}\n" in text


def test_check_bundle_sees_a_hand_edit_and_a_stray_file(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    bundle = compiled(tmp_path)
    write_bundle(bundle, out)
    (out / "jobs" / "exp_2.sbatch").write_text("edited\n")
    (out / "notes.txt").write_text("mine\n")
    fresh, text = check_bundle(bundle, out)
    assert not fresh
    assert "changed exp_2" not in text  # check_text lists files, not job sections
    assert "-edited\n" in text
    assert "--- a/notes.txt\n+++ /dev/null\n" in text
    assert "files that differ: notes.txt" in text


def test_check_bundle_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(ConfigError, match="holds no plan"):
        check_bundle(compiled(tmp_path), tmp_path / "other")


def test_pre_commit_hook_runs_compile_check() -> None:
    hooks = YAML(typ="safe").load((REPO / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "oellm-compile-check")
    assert hook["entry"].split() == ["oellm", "compile", "--check"]
    assert (hook["language"], hook["pass_filenames"]) == ("python", False)


def test_compile_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write(tmp_path / "exp.yaml", EXPERIMENT)
    out = tmp_path / "bundle"
    # As the hook runs it: the entry, then the user's args.
    args = ["compile", "--check", str(exp), "-o", str(out)]
    assert main(args) == 1 and not out.exists()
    assert "holds no bundle yet" in capsys.readouterr().out
    assert main(["compile", str(exp), "-o", str(out)]) == 0
    assert main(args) == 0
    assert main([*args, "vars.steps=200"]) == 1
    assert "+oellm_command='train --lr 1 --steps 200'" in capsys.readouterr().out


def test_registered_as_oellm_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bundle(compiled(tmp_path, "vars.steps=100"), tmp_path / "a")
    write_bundle(compiled(tmp_path, "vars.steps=200"), tmp_path / "b")
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    assert "Traceback" not in capsys.readouterr().err
