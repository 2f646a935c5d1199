"""`oellm diff OLD NEW` (each side a bundle folder or a git revision of one) and the comparison
behind `oellm compile --check`.

Git is asked through the one door to the shell (`oellm/shell.py`); a revision's bundle
arrives as a `git archive` tar file, so every byte is read as committed. The comparison of two
whole bundles (`compiler.diff`) is imported where it runs: `compile --check` of a bundle that
is up to date needs none of it.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click

from oellm.bundle_files import LOCK_NAME
from oellm.compiler.checking import CheckedFiles, folder_files, read_folder
from oellm.compiler.errors import fail
from oellm.compiler.pipeline import CompiledBundle
from oellm.errors import EXIT_DIFFERENT, EXIT_OK, CommandError
from oellm.guard import guarded
from oellm.shell import Completed, run

# A big repository can take a while to pack a tree; a hung git must still not hang a hook.
GIT_TIMEOUT_S = 120.0
_PATH_HINT = (
    "a path after ':' is relative to the top of the repository, as in git; "
    "write REV:./PATH for one relative to the current folder"
)


def read_revision(
    rev: str, path: str, cwd: Path | None = None, label: str | None = None
) -> dict[str, bytes]:
    """The files of folder `path` (git's syntax: from the top of the repository, or `./...`
    from `cwd`) as committed in revision `rev`. Errors name the side as `label`."""
    spec = f"{rev}:{path}"
    label = label or spec
    if not rev or rev.startswith("-"):
        raise click.UsageError(f"'{label}': '{rev}' is not a git revision")
    if _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{tree}}"], cwd).returncode != 0:
        if _git(["rev-parse", "--git-dir"], cwd).returncode != 0:
            raise fail(f"'{label}': {cwd or Path.cwd()} is not inside a git repository")
        raise fail(f"'{label}': unknown git revision '{rev}'")
    found = _git(["rev-parse", "--verify", "--quiet", spec], cwd)
    if found.returncode != 0:
        raise fail(f"'{label}': no folder '{path}' in revision {rev}", hint=_PATH_HINT)
    oid = found.stdout.strip()
    if _git(["cat-file", "-t", oid], cwd).stdout.strip() != "tree":
        raise fail(f"'{label}' is a file, not a bundle folder")
    # Run from a subfolder, git archive keeps only that subfolder of the tree: run it at the top.
    top = (cwd or Path.cwd()) / _git(["rev-parse", "--show-cdup"], cwd).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="oellm-diff-") as tmp:
        tar_path = Path(tmp, "bundle.tar")
        # An object id, not REV:PATH, so no commit-dependent substitution can apply.
        archived = _git(
            ["-c", "core.autocrlf=false", "archive", "--format=tar", f"--output={tar_path}", oid],
            top,
        )
        if archived.returncode != 0:
            raise fail(f"'{label}': git archive failed: {archived.stderr.strip()}")
        files = _read_tar(tar_path)
    if LOCK_NAME not in files:
        raise fail(f"'{label}' is not a bundle: it holds no {LOCK_NAME}")
    return files


def _read_tar(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files[member.name] = handle.read()
    return files


def _git(args: Sequence[str], cwd: Path | None) -> Completed:
    try:
        return run(["git", *args], timeout=GIT_TIMEOUT_S, cwd=cwd)
    except CommandError as error:
        raise fail(
            f"cannot run git: {error.message}",
            hint="install git, or compare two bundle folders",
        ) from None


def read_side(arg: str, other: str) -> dict[str, bytes]:
    """One side of `oellm diff`: a bundle folder, REV:PATH, or a bare revision of the folder
    the other side names."""
    local = Path(arg)
    if local.is_dir():
        files = read_folder(local)
        if LOCK_NAME not in files:
            raise fail(f"'{arg}' is not a bundle: it holds no {LOCK_NAME}")
        return files
    if local.exists():
        raise fail(f"'{arg}' is a file, not a bundle folder")
    if ":" in arg:
        rev, path = arg.split(":", 1)
        if not rev:
            raise click.UsageError(f"'{arg}': give a revision before ':' (HEAD:{path})")
        return read_revision(rev, path)
    if Path(other).is_dir():
        # `oellm diff HEAD~1 bundle/`: the same folder, as committed in that revision.
        folder = Path(other)
        if _git(["rev-parse", "--verify", "--quiet", f"{arg}^{{tree}}"], folder).returncode != 0:
            raise fail(f"'{arg}' is neither a folder nor a git revision of '{other}'")
        return read_revision(arg, "./", folder, label=f"{arg}:{other}")
    if ":" in other and not Path(other).exists():
        path = other.split(":", 1)[1]
        return read_revision(arg, path, label=f"{arg}:{path}")
    raise click.UsageError(
        f"'{arg}' is not a folder; a bare revision needs a bundle folder on the other side "
        f"(oellm diff {arg} BUNDLE), or write {arg}:PATH"
    )


def parse_moved(values: Sequence[str]) -> dict[str, str]:
    moved: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(f"'{value}' is not OLD=NEW", param_hint="--moved")
        if moved.get(old, new) != new:
            raise click.BadParameter(
                f"'{old}' moves to both '{moved[old]}' and '{new}'", param_hint="--moved"
            )
        moved[old] = new
    return moved


def check_bundle(bundle: CompiledBundle, out: Path, color: bool = False) -> tuple[bool, str]:
    """Compare a bundle with the folder `out` (absent: everything is new). Returns (up to date,
    text to print): a summary, and the unified diff of every file that `compile` would write
    differently. A bundle compiled into `CheckedFiles(out)` was compared file by file as it was
    made; one compiled in memory is compared here the same way."""
    if out.exists() and not out.is_dir():
        raise fail(f"'{out}' exists and is not a folder")
    files = bundle.files
    if not isinstance(files, CheckedFiles) or files.folder != out:
        files = CheckedFiles(out)
        files.update(bundle.files)
    listed = folder_files(out)
    if listed and LOCK_NAME not in listed:
        raise fail(
            f"'{out}' is not empty and holds no {LOCK_NAME}: it is not a bundle",
            hint="point -o at the bundle folder",
        )
    jobs = len(bundle.lock.jobs)
    up_to_date = f"{out}: up to date ({jobs} job{'' if jobs == 1 else 's'})\n"
    # The usual answer, found without parsing either lockfile: every file is the same.
    if files.up_to_date(listed):
        return True, up_to_date
    from oellm.compiler.diff import compare
    from oellm.compiler.diff_render import check_text

    current, made = files.bundles(listed)
    result = compare(current, made)
    if result.identical:
        return True, up_to_date
    what = "is out of date" if current else "holds no bundle yet"
    head = f"{out} {what}: run the same `oellm compile` without --check to write it\n"
    return False, head + check_text(result, color)


@click.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--json", "as_json", is_flag=True, help="The differences as one JSON object.")
@click.option(
    "--moved",
    "moved",
    multiple=True,
    metavar="OLD=NEW",
    help="Job OLD is now called NEW: shown as a rename (repeatable).",
)
@click.option("--color/--no-color", default=None, help="Color the text (default: on a terminal).")
@guarded
def diff_command(
    old: str, new: str, as_json: bool, moved: tuple[str, ...], color: bool | None
) -> int:
    """Show what changed between two bundles: jobs added, removed, renamed and changed (which
    params, which lock fields, the script diff), and how many are unchanged.

    \b
    OLD and NEW are bundle folders or git revisions of one:
      oellm diff HEAD~1:bundle bundle     the committed bundle against the one on disk
      oellm diff HEAD~1 bundle            the same
      oellm diff main:exp/bundle HEAD:exp/bundle
    Exit codes: 0 identical, 1 different, 2 a side is not a bundle or not a revision.
    """
    from oellm.compiler.diff import compare
    from oellm.compiler.diff_render import render_json, render_text

    renames = parse_moved(moved)
    result = compare(read_side(old, new), read_side(new, old), renames)
    if as_json:
        click.echo(json.dumps(render_json(result), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(result, color=color is not False), nl=False, color=color)
    return EXIT_OK if result.identical else EXIT_DIFFERENT
