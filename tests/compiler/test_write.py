"""Writing a bundle: every file written once and synced once, executable scripts, and a
recompile that leaves a file unchanged does not write it again (the new bundle links it)."""

from __future__ import annotations

import dataclasses
import os
import stat
import threading
from pathlib import Path

from oellm.compiler.write import write_bundle
from tests.helpers import EXAMPLES, compile_file


def _files(folder: Path) -> dict[str, os.stat_result]:
    return {
        p.relative_to(folder).as_posix(): p.stat() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_written_bytes_and_modes(tmp_path: Path) -> None:
    bundle = compile_file(EXAMPLES / "sweeps" / "grid.yaml")
    out = tmp_path / "bundle"
    write_bundle(bundle, out)
    found = _files(out)
    assert set(found) == set(bundle.files)
    for name, data in bundle.files.items():
        assert (out / name).read_bytes() == data
        executable = bool(found[name].st_mode & stat.S_IXUSR)
        assert executable == name.endswith(".sbatch"), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left"


def test_a_recompile_writes_only_what_changed(tmp_path: Path) -> None:
    bundle = compile_file(EXAMPLES / "sweeps" / "grid.yaml")
    out = tmp_path / "bundle"
    write_bundle(bundle, out)
    before = _files(out)
    changed_name = next(n for n in sorted(bundle.files) if n.endswith(".sbatch"))
    files = dict(bundle.files)
    files[changed_name] = files[changed_name] + b"# changed\n"
    write_bundle(dataclasses.replace(bundle, files=files), out)
    after = _files(out)
    assert set(after) == set(before)
    for name in after:
        same_inode = after[name].st_ino == before[name].st_ino
        assert same_inode == (name != changed_name), name
    assert (out / changed_name).read_bytes() == files[changed_name]
    assert os.access(out / changed_name, os.X_OK)


def test_a_file_removed_from_the_old_bundle_is_written(tmp_path: Path) -> None:
    bundle = compile_file(EXAMPLES / "demo.yaml")
    out = tmp_path / "bundle"
    write_bundle(bundle, out)
    gone = next(n for n in bundle.files if n.endswith(".config.json"))
    (out / gone).unlink()
    write_bundle(bundle, out)
    assert (out / gone).read_bytes() == bundle.files[gone]


def test_scripts_run_for_everyone_under_any_umask(tmp_path: Path) -> None:
    bundle = compile_file(EXAMPLES / "demo.yaml")
    for mask in (0o022, 0o077, 0o002, 0o027):
        previous = os.umask(mask)
        try:
            out = tmp_path / f"bundle-{mask:o}"
            write_bundle(bundle, out)
        finally:
            os.umask(previous)
        for name, found in _files(out).items():
            wanted = 0o755 if name.endswith(".sbatch") else 0o644 & ~mask
            assert stat.S_IMODE(found.st_mode) == wanted, (oct(mask), name)
        # A file that is the same in the old bundle is linked, keeping its mode.
        write_bundle(bundle, out)
        assert stat.S_IMODE((out / bundle.lock.jobs[0].script).stat().st_mode) == 0o755


def test_a_fifo_in_the_old_bundle_is_replaced_not_read(tmp_path: Path) -> None:
    bundle = compile_file(EXAMPLES / "demo.yaml")
    out = tmp_path / "bundle"
    write_bundle(bundle, out)
    script = out / bundle.lock.jobs[0].script
    script.unlink()
    os.mkfifo(script)
    done = threading.Event()

    def rewrite() -> None:
        write_bundle(bundle, out)
        done.set()

    threading.Thread(target=rewrite, daemon=True).start()
    assert done.wait(30), "reading a FIFO of the old bundle blocked"
    assert stat.S_ISREG(script.stat().st_mode)
    assert script.read_bytes() == bundle.files[bundle.lock.jobs[0].script]
