"""`make_job_folders`: the folders a job logs and writes into, made before it is submitted,
each asked about once per round (`known`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oellm.reconciler.bundle import Bundle
from oellm.reconciler.errors import ReconcileError
from oellm.reconciler.folders import make_job_folders
from oellm.reconciler.model import LockJob


def job(name: str, output: str, log: str) -> LockJob:
    return LockJob(name=name, script=f"jobs/{name}.sbatch", sha256="0" * 64, output_dir=output,
                   log_path=log)  # fmt: skip


def bundle(tmp_path: Path, *jobs: LockJob) -> Bundle:
    return Bundle(tmp_path / "bundle", "b" * 64, "p", "out", "state", jobs)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every folder `Path.mkdir` is asked to make, in order (each still made)."""
    seen: list[Path] = []
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        seen.append(self)
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return seen


def test_each_folder_is_made_once_and_told_as_made(tmp_path: Path) -> None:
    a = job("a", "out/a", "logs/slurm-a.log")
    made = make_job_folders(bundle(tmp_path, a), a)
    assert made == [tmp_path / "logs", tmp_path / "out/a"]
    assert all(folder.is_dir() for folder in made)
    assert make_job_folders(bundle(tmp_path, a), a) == [], "there already"


def test_a_folder_the_round_knows_is_not_asked_about_again(
    tmp_path: Path, asked: list[Path]
) -> None:
    jobs = [job(f"j{n}", f"out/j{n}", "logs/slurm-%j.log") for n in range(3)]
    b = bundle(tmp_path, *jobs)
    known: set[Path] = set()
    made = [folder for j in jobs for folder in make_job_folders(b, j, known)]
    assert made == [tmp_path / "logs", *(tmp_path / f"out/j{n}" for n in range(3))]
    assert asked.count(tmp_path / "logs") == 1, "the shared log folder: once"
    assert known == set(made)


def test_a_file_where_a_folder_goes_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    a = job("a", "out", "out/slurm-%j.log")
    with pytest.raises(ReconcileError, match="cannot create the folder of job a: File exists"):
        make_job_folders(bundle(tmp_path, a), a)


def test_a_folder_there_already_is_taken_whatever_the_refusal_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems answer a mkdir of a folder that exists with EACCES or EROFS (a
    read-only parent) rather than EEXIST: the folder is there, so nothing is wrong."""
    (tmp_path / "out").mkdir()
    a = job("a", "out", "out/slurm-%j.log")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert make_job_folders(bundle(tmp_path, a), a) == []
    b = job("b", "missing", "missing/slurm-%j.log")
    with pytest.raises(ReconcileError, match="of job b: Permission denied"):
        make_job_folders(bundle(tmp_path, b), b)


def test_a_log_in_the_output_dir_makes_one_folder_with_one_call(
    tmp_path: Path, asked: list[Path]
) -> None:
    (tmp_path / "out").mkdir()  # (a missing parent is made, and the folder asked again)
    a = job("a", "out/a", "out/a/slurm-%j.log")
    assert make_job_folders(bundle(tmp_path, a), a) == [tmp_path / "out/a"]
    assert asked.count(tmp_path / "out/a") == 1
