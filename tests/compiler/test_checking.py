"""`oellm compile --check` compares each file with the bundle on disk as it is compiled
(`compiler/checking.py`): the same exit codes and text as comparing the whole folder with the
whole bundle compiled in memory, and nothing written anywhere."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from oellm.cli import main
from oellm.compiler.checking import CheckedFiles, folder_files, read_folder
from oellm.compiler.diff import compare
from oellm.compiler.diff_render import check_text
from oellm.compiler.pipeline import CompileRequest, compile_bundle
from tests.helpers import write
from tests.test_diff_cli import EXPERIMENT


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def listing(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under `root` (folders and links too) with its mtime, ctime, size, inode."""
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            found[path] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    return found


def stale_text(out: Path, exp: Path, overrides: tuple[str, ...] = ()) -> str:
    """What --check prints for a stale bundle, made the way it always was: the whole folder
    read, the whole bundle compiled in memory, the two compared."""
    request = CompileRequest(
        experiment=exp, overrides=overrides, env=dict(os.environ), bundle_dir=out
    )
    result = compare(read_folder(out), compile_bundle(request).files)
    assert not result.identical
    head = f"{out} is out of date: run the same `oellm compile` without --check to write it\n"
    return head + check_text(result)


@pytest.fixture
def bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A bundle compiled from tmp_path/exp.yaml into tmp_path/bundle."""
    exp = write(tmp_path / "exp.yaml", EXPERIMENT)
    assert run(["compile", str(exp), "-o", str(tmp_path / "bundle")], capsys)[0] == 0
    return tmp_path / "bundle"


def check(bundle: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, str]:
    """`compile --check`, asserting that it wrote nothing under the test's folder."""
    root = bundle.parent
    before = listing(root)
    code, text = run(
        ["compile", str(root / "exp.yaml"), "-o", str(bundle), "--check", *overrides], capsys
    )
    assert listing(root) == before, "--check wrote something"
    return code, text


def test_an_unchanged_bundle_is_up_to_date(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(bundle, capsys) == (0, f"{bundle} is up to date\n")


def _edit_script(bundle: Path) -> None:
    (bundle / "jobs" / "exp_2.sbatch").write_text("edited by hand\n")


def _longer_script(bundle: Path) -> None:
    with open(bundle / "jobs" / "exp_2.sbatch", "a") as handle:
        handle.write("# one more line\n")


def _delete_script(bundle: Path) -> None:
    (bundle / "jobs" / "exp_1.sbatch").unlink()


def _delete_config(bundle: Path) -> None:
    (bundle / "jobs" / "exp_3.config.json").unlink()


def _extra_file(bundle: Path) -> None:
    (bundle / "notes.txt").write_text("mine\n")


def _extra_script(bundle: Path) -> None:
    (bundle / "jobs" / "exp_9.sbatch").write_text("#!/bin/bash\n")


def _lock_changed(bundle: Path) -> None:
    path = bundle / "plan.lock.json"
    lock = json.loads(path.read_text())
    lock["jobs"][1]["chain_repeat"] = 7
    path.write_text(json.dumps(lock, indent=2) + "\n")


def _lock_longer(bundle: Path) -> None:
    with open(bundle / "plan.lock.json", "a") as handle:
        handle.write("\n")


EDITS: dict[str, tuple[Callable[[Path], None], str]] = {
    "script edited": (_edit_script, "-edited by hand\n"),
    "script longer": (_longer_script, "-# one more line\n"),
    "script deleted": (_delete_script, "--- /dev/null\n+++ b/jobs/exp_1.sbatch\n"),
    "config deleted": (_delete_config, "--- /dev/null\n+++ b/jobs/exp_3.config.json\n"),
    "extra file": (_extra_file, "files that differ: notes.txt\n"),
    "extra script": (_extra_script, "--- a/jobs/exp_9.sbatch\n+++ /dev/null\n"),
    "lockfile changed": (_lock_changed, '-      "chain_repeat": 7,\n'),
    "lockfile longer": (_lock_longer, "--- a/plan.lock.json\n+++ b/plan.lock.json\n"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_bundle_is_stale(
    edit: str, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, shown = EDITS[edit]
    change(bundle)
    code, text = check(bundle, capsys)
    assert code == 1
    assert shown in text
    assert text == stale_text(bundle, bundle.parent / "exp.yaml")


@pytest.mark.parametrize(
    ("values", "summary"),
    [("[1, 2, 3, 4]", "1 added, 0 removed"), ("[1, 3]", "0 added, 1 removed")],
)
def test_a_job_added_or_removed_in_the_config(
    values: str, summary: str, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = bundle.parent / "exp.yaml"
    exp.write_text(exp.read_text().replace("[1, 2, 3]", values))
    code, text = check(bundle, capsys)
    assert code == 1
    assert f"bundles differ: {summary}, 0 changed, 0 renamed, " in text
    assert text == stale_text(bundle, exp)


def test_an_override_that_changes_every_job(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = check(bundle, capsys, "vars.steps=200")
    assert code == 1
    assert "bundles differ: 0 added, 0 removed, 3 changed, 0 renamed, 0 unchanged" in text
    assert text == stale_text(bundle, bundle.parent / "exp.yaml", ("vars.steps=200",))


def test_a_missing_bundle_folder_is_not_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", EXPERIMENT)
    out = tmp_path / "not" / "there"
    before = listing(tmp_path)
    code, text = run(["compile", str(exp), "-o", str(out), "--check"], capsys)
    assert code == 1
    assert text.startswith(f"{out} holds no bundle yet: run the same `oellm compile`")
    assert "--- /dev/null\n+++ b/plan.lock.json\n" in text
    assert "--- /dev/null\n+++ b/jobs/exp_2.sbatch\n" in text
    assert listing(tmp_path) == before


def test_a_folder_that_is_not_a_bundle_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", EXPERIMENT)
    write(tmp_path / "other" / "x.txt", "x")
    code, text = run(["compile", str(exp), "-o", str(tmp_path / "other"), "--check"], capsys)
    assert code == 2
    assert "is not empty and holds no plan.lock.json: it is not a bundle" in text
    assert "Traceback" not in text


def test_a_lockfile_that_is_not_json_is_a_user_error(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (bundle / "plan.lock.json").write_text("{not json")
    code, text = check(bundle, capsys)
    assert code == 2
    assert "the old bundle's plan.lock.json cannot be read" in text


def test_an_empty_folder_and_a_link_to_a_script(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Neither is a difference, as `oellm diff` sees a folder: it lists regular files only,
    # and a link to a file is that file.
    (bundle / "empty").mkdir()
    script = bundle / "jobs" / "exp_1.sbatch"
    kept = bundle.parent / "kept.sbatch"
    shutil.copyfile(script, kept)
    script.unlink()
    script.symlink_to(kept)
    assert check(bundle, capsys)[0] == 0


# CheckedFiles on its own: the pieces of a lockfile, and a file made again.


def _folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize(
    ("on_disk", "pieces"),
    [
        (b"abcdef", ["ab", "cd", "ef"]),
        (b"abcdef", ["ab", "cX", "ef"]),
        (b"abcdef", ["ab", "cd", "efg"]),
        (b"abcdefg", ["ab", "cd", "ef"]),
        (b"ab", ["ab", "cd"]),
        (b"", ["\u00e9t\u00e9"]),
    ],
)
def test_text_in_pieces(tmp_path: Path, on_disk: bytes, pieces: list[str]) -> None:
    folder = _folder(tmp_path, {"lock": on_disk})
    files = CheckedFiles(folder)
    with files.text("lock") as handle:
        for piece in pieces:
            handle.write(piece)
    made = "".join(pieces).encode("utf-8")
    assert files.same("lock") == (made == on_disk)
    assert files["lock"] == made
    assert files.up_to_date(folder_files(folder)) == (made == on_disk)
    assert files.bundles(folder_files(folder)) == ({"lock": on_disk}, {"lock": made})


def test_text_of_a_missing_file(tmp_path: Path) -> None:
    files = CheckedFiles(tmp_path / "nothing")
    with files.text("lock") as handle:
        handle.write("{}")
    assert not files.same("lock") and files["lock"] == b"{}"


def test_files_after_a_difference_are_kept_and_compared_at_the_end(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"a": b"A", "b": b"B", "c": b"C"})
    files = CheckedFiles(folder)
    files["a"] = b"not A"  # a difference: "b" is kept without reading the folder's
    files["b"] = b"B"
    assert not files.same("b") and files["b"] == b"B"
    files["a"] = b"A"  # made again, as the lockfile is when the state key changes
    files["c"] = b"C"
    assert files.up_to_date(folder_files(folder))
    files["b"] = b"other"
    del files["c"]
    assert not files.up_to_date(folder_files(folder))
    current, made = files.bundles(folder_files(folder))
    assert current == {"a": b"A", "b": b"B", "c": b"C"}
    assert made == {"a": b"A", "b": b"other"}


def test_an_unchanged_file_is_read_from_the_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"jobs/a.sbatch": b"A"})
    files = CheckedFiles(folder)
    files["jobs/a.sbatch"] = b"A"
    assert files.same("jobs/a.sbatch") and files["jobs/a.sbatch"] == b"A"
    assert list(files) == ["jobs/a.sbatch"] and len(files) == 1
    with pytest.raises(KeyError):
        files["jobs/b.sbatch"]


def test_folder_files_lists_what_os_walk_finds(tmp_path: Path) -> None:
    root = _folder(tmp_path / "b", {"a": b"", "jobs/x": b"x", "jobs/deep/y": b"y"})
    (root / "empty").mkdir()
    (root / "file_link").symlink_to(root / "a")
    (root / "folder_link").symlink_to(root / "jobs")
    (root / "broken").symlink_to(root / "gone")
    os.mkfifo(root / "jobs" / "fifo")
    walked = {
        Path(folder, name).relative_to(root).as_posix()
        for folder, _, names in os.walk(root)
        for name in names
        if Path(folder, name).is_file()
    }
    assert (
        sorted(folder_files(root)) == sorted(walked) == ["a", "file_link", "jobs/deep/y", "jobs/x"]
    )
    assert folder_files(tmp_path / "missing") == []
    assert read_folder(root) == {"a": b"", "file_link": b"", "jobs/deep/y": b"y", "jobs/x": b"x"}


def test_a_fifo_in_the_bundle_does_not_hang_the_check(tmp_path: Path) -> None:
    folder = tmp_path
    os.mkfifo(folder / "x.sbatch")
    os.mkfifo(folder / "plan.lock.json")
    script, lock = CheckedFiles(folder), CheckedFiles(folder)
    done = threading.Event()

    def make() -> None:
        script["x.sbatch"] = b"#!/bin/bash\n"
        with lock.text("plan.lock.json") as handle:
            handle.write("{}")
        done.set()

    threading.Thread(target=make, daemon=True).start()
    assert done.wait(10), "reading a FIFO blocked"
    assert not script.same("x.sbatch") and not lock.same("plan.lock.json")
    assert not script.up_to_date(folder_files(folder))
