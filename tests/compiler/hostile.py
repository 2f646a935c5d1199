"""Hostile config values and the fakes that catch them, shared by the quoting and fuzz tests.

A compiled job script is run by the real bash with a directory of fakes first on PATH: each fake
(srun, apptainer, singularity, python) records its argv and environment NUL-separated, so a test
compares the bytes a program receives with the bytes the config held (HOUSE_STYLE 4).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# id -> value. Each is a way a value has broken a generated shell script somewhere.
HOSTILE: dict[str, str] = {
    "space": "two words",
    "single_quote": "it's",
    "double_quote": 'say "hi"',
    "command_substitution": "$(id)",
    "backticks": "`id`",
    "semicolon": "a;id",
    "and": "a&&id",
    "pipe": "a|id",
    "redirect": "a>out",
    "backslash": "a\\b",
    "trailing_backslash": "a\\",
    "newline": "a\nid",
    "carriage_return": "a\rb",
    "tab": "a\tb",
    "dollar_var": "$HOME",
    "dollar_brace": "${HOME}",
    "escaped_dollar_brace": "\\${HOME}",
    "glob": "*",
    "tilde": "~",
    "bang": "!",
    "hash": "#",
    "unicode": "ä € 日本 🚀",
    "leading_dash": "-rf",
    "empty": "",
}

FAKES = ("srun", "apptainer", "singularity", "python")
JOB_ID = "4242"

_RECORD = """#!/bin/bash
# A fake {name} for the quoting tests: record argv and environment, NUL-separated.
for word in "$@"; do printf '%s\\0' "$word"; done > "$OELLM_FAKE_LOG/{name}.argv"
env -0 > "$OELLM_FAKE_LOG/{name}.env"
"""

# srun runs the step; follow it into the fakes of the programs it launches, but never into
# `bash -c <command>`, which would run the hostile command itself.
_SRUN_TAIL = """while [ "$#" -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done
case "${1-}" in apptainer|singularity|python) exec "$@" ;; esac
"""


@dataclass(frozen=True)
class Run:
    """What running a job script with the fakes left behind."""

    returncode: int
    stdout: bytes
    stderr: bytes
    cwd: Path
    log: Path

    def argv(self, fake: str) -> list[bytes]:
        data = (self.log / f"{fake}.argv").read_bytes()
        return data.split(b"\0")[:-1]

    def env(self, fake: str) -> dict[bytes, bytes]:
        data = (self.log / f"{fake}.env").read_bytes()
        pairs = (entry.partition(b"=") for entry in data.split(b"\0") if entry)
        return {name: value for name, _, value in pairs}

    def ran(self, fake: str) -> bool:
        return (self.log / f"{fake}.argv").exists()


def install_fakes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FAKES:
        fake = folder / name
        fake.write_text(_RECORD.format(name=name) + (_SRUN_TAIL if name == "srun" else ""))
        fake.chmod(0o755)
    return folder


def bash_syntax_errors(script: Path) -> str:
    """`bash -n` on the script: empty when it parses."""
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30, check=False)
    return "" if done.returncode == 0 else done.stderr.decode(errors="replace") or "rc != 0"


def run_script(script: bytes, where: Path) -> Run:
    """Write the script under `where`, check its syntax and run it as SLURM would, with fakes."""
    fakes = install_fakes(where / "fakes")
    log = where / "log"
    cwd = where / "cwd"
    home = where / "home"
    for folder in (log, cwd, home):
        folder.mkdir(parents=True, exist_ok=True)
    path = where / "job.sbatch"
    path.write_bytes(script)
    problem = bash_syntax_errors(path)
    assert not problem, f"bash -n rejects the script:\n{problem}"
    env = {
        "PATH": f"{fakes}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "SLURM_JOB_ID": JOB_ID,
        "OELLM_FAKE_LOG": str(log),
    }
    done = subprocess.run(
        ["bash", str(path)], cwd=cwd, env=env, capture_output=True, timeout=30, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr, cwd, log)
