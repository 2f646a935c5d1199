"""Shell completion through click's protocol (`_OELLM_COMPLETE=bash_complete`), as bash calls
it: job names from the bundle's lockfile, config group options after `GROUP=`, files for the
experiment, and nothing (not an error) for a folder that is not a bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from oellm.cli import main
from tests.helpers import write


def complete(
    words: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> list[str]:
    monkeypatch.setenv("_OELLM_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(words.split(" ")) - 1))
    assert main([]) == 0
    return capsys.readouterr().out.splitlines()


def test_completion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "e.yaml",
        """
        project: {name: cp}
        job: {name: "lr_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "true"}}
        sweep: {params: {vars.i: [1, 2]}}
        """,
    )
    assert main(["compile", "e.yaml", "-o", "b"]) == 0
    capsys.readouterr()
    assert complete("oellm retry b lr_", monkeypatch, capsys) == ["plain,lr_1", "plain,lr_2"]
    assert complete("oellm cancel b lr_2", monkeypatch, capsys) == ["plain,lr_2"]
    assert complete("oellm logs b l", monkeypatch, capsys) == ["plain,lr_1", "plain,lr_2"]
    assert complete("oellm status b ", monkeypatch, capsys) == ["plain,lr_1", "plain,lr_2", "dir,"]
    nothing = complete("oellm retry nothere ", monkeypatch, capsys)
    assert not [item for item in nothing if item.startswith("plain,")]
    presets = complete("oellm compile e.yaml slurm=", monkeypatch, capsys)
    assert "plain,slurm=local" in presets and "plain,slurm=leonardo" in presets
    assert complete("oellm compile e.yaml slurm=lo", monkeypatch, capsys) == ["plain,slurm=local"]
    # A config dir beside the experiment adds its own presets.
    write(tmp_path / "config" / "slurm" / "mine.yaml", "slurm: {}\n")
    assert complete("oellm compile e.yaml slurm=m", monkeypatch, capsys)[-1] == "plain,slurm=mine"
    first = complete("oellm compile ", monkeypatch, capsys)
    assert first[-1] == "file," and "plain,slurm=" in first
    assert complete("oellm compile e.yaml ", monkeypatch, capsys)[-1] != "file,"
