"""The README's commands work as written: every ```bash block runs, top to bottom, in one fresh
copy of the repository, as a new user would type them.

The convention, for whoever edits README.md:

* Every fenced block opened with ```bash (or ```sh, ```shell) is run. Blocks of other kinds
  (```yaml, plain ``` for synopses, crontab lines and sample output) are not commands.
* A bash block that cannot run in a test (it needs a real cluster account, apptainer, cron,
  Graphviz, root...) gets, on the line just above its fence, the HTML comment

      <!-- not run: WHY -->

  which GitHub does not show. The reason is required. Nothing else skips a block: a new
  unmarked block that fails makes this test fail.
* The blocks run in order, in one shell per block, from the top of the copy of the repository
  (so `bundle/` written by the quick start is there for later blocks), with a fresh venv first on
  PATH (the quick start's `pip install` goes there) and a temporary HOME.
* Each command line must exit 0; an `oellm` command may also exit 1, which the README defines as
  "ran fine and acted or found a difference" (`reconcile` that submitted, `diff` that differs).

The blocks reach the real local SLURM (`oellm reconcile` without `--scheduler`, `sbatch`), so
this test is marked `slurm`; jobs it leaves queued are cancelled at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

README = REPO / "README.md"
COMMAND_LANGUAGES = {"bash", "sh", "shell"}
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<why>.*?)\s*-->$")
# The quick start installs oellm into the fresh venv; give each block time for that.
BLOCK_TIMEOUT_S = 600
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_run: str | None  # the reason, when marked


def blocks(markdown: str) -> list[Block]:
    found: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        above = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marked = NOT_RUN.match(above)
        found.append(
            Block(
                start + 1, opened.group(1), "\n".join(body), marked.group("why") if marked else None
            )
        )
        index += 1
    return found


def commands(text: str) -> list[str]:
    """The logical command lines of a block: continuations joined, blanks and comments left out."""
    joined = text.replace("\\\n", " ")
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def script(block: Block) -> str:
    """The block as one bash script that shows each line and stops at the first failing one."""
    parts = ["set -o pipefail"]
    for number, line in enumerate(commands(block.text), start=1):
        allowed = "0|1" if line.lstrip().startswith("oellm ") else "0"
        shown = f"README.md:{block.line}: line {number}: {line}"
        parts += [
            f"printf '+ %s\\n' {_quote(line)}",
            f"{{ {line}\n}}",
            "rc=$?",
            f'case "$rc" in {allowed}) ;; *) printf "exit %s: %s\\n" "$rc" {_quote(shown)} >&2;'
            " exit 1 ;; esac",
        ]
    return "\n".join(parts) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_not_run_markers_give_a_reason_and_sit_above_a_bash_block() -> None:
    text = README.read_text(encoding="utf-8")
    marked = {block.line for block in blocks(text) if block.not_run is not None}
    for block in blocks(text):
        if block.not_run is not None:
            assert block.language in COMMAND_LANGUAGES, f"README.md:{block.line}: not a bash block"
            assert block.not_run, f"README.md:{block.line}: say why it is not run"
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if NOT_RUN.match(line.strip()) or line.strip().startswith("<!-- not run"):
            following = next(
                (i + 1 for i in range(number, len(lines)) if lines[i].strip()), len(lines) + 1
            )
            assert following in marked, f"README.md:{number}: a not-run marker above no bash block"


def test_the_quick_start_is_two_commands_at_the_top_and_runs() -> None:
    first = next(b for b in blocks(README.read_text(encoding="utf-8")) if b.language == "bash")
    assert first.not_run is None
    assert [line.split()[0] for line in commands(first.text)] == ["pip", "oellm"]


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=COPY_IGNORE, symlinks=True)
    for leftover in ("bundle", "b", "output"):
        shutil.rmtree(copy / leftover, ignore_errors=True)
    return copy


def _cancel_jobs_under(folder: Path) -> None:
    """The README submits with sbatch by hand and through the reconciler: cancel what is left."""
    listed = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%i|%Z"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ids = [
        job_id
        for job_id, _, workdir in (line.partition("|") for line in listed.stdout.splitlines())
        if workdir.startswith(str(folder))
    ]
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=60)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_every_bash_block_of_the_readme_runs(fresh_copy: Path, tmp_path: Path) -> None:
    runnable = [
        b
        for b in blocks(README.read_text(encoding="utf-8"))
        if b.language in COMMAND_LANGUAGES and b.not_run is None
    ]
    assert len(runnable) >= 5, "the README lost its command blocks?"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OELLM_", "VIRTUAL_ENV", "PYTHON")) and key != "OUTPUT_DIR"
    }
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "HOME": str(home),
        # pip's cache stays where it was, so the fresh venv installs from it.
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
    }
    try:
        for block in runnable:
            done = subprocess.run(
                ["bash", "-c", script(block)],
                cwd=fresh_copy,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
                check=False,
            )
            assert done.returncode == 0, (
                f"README.md:{block.line}: the block failed\n{done.stdout}\n{done.stderr}"
            )
    finally:
        _cancel_jobs_under(tmp_path)
    # The quick start really installed and ran the demo from the copy, not from elsewhere.
    assert (venv / "bin" / "oellm").is_file()
    assert (fresh_copy / "bundle" / "plan.lock.json").is_file()
    logs = sorted((fresh_copy / "output" / "demo").glob("slurm-*.log"))
    assert any("hello from demo" in log.read_text() for log in logs), logs


def test_script_stops_at_a_failing_line_and_names_it(tmp_path: Path) -> None:
    block = Block(7, "bash", "true\nfalse   # fails\necho never", None)
    done = subprocess.run(
        ["bash", "-c", script(block)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "README.md:7: line 2: false   # fails" in done.stderr and "never" not in done.stdout


def test_oellm_may_exit_1_and_others_may_not(tmp_path: Path) -> None:
    fake = tmp_path / "oellm"
    fake.write_text('#!/bin/sh\nexit "$1"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}

    def status(text: str) -> int:
        block = Block(1, "bash", text, None)
        return subprocess.run(
            ["bash", "-c", script(block)], env=env, capture_output=True, check=False
        ).returncode

    assert status("oellm 1") == 0
    assert status("oellm 2") == 1
    assert status("sh -c 'exit 1'") == 1
