"""The one door to the shell (`oellm.shell`), on harmless commands."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from oellm import shell
from oellm.errors import CommandError, CommandTimeout


def test_run_returns_output_and_status_without_judging() -> None:
    done = shell.run([sys.executable, "-c", "import sys; print('out'); sys.exit('err')"], 10)
    assert (done.returncode, done.stdout, done.stderr) == (1, "out\n", "err\n")
    assert done.argv[0] == sys.executable


def test_run_uses_cwd_and_env_and_never_a_shell(tmp_path: Path) -> None:
    code = "import os; print(os.getcwd(), os.environ.get('OELLM_X'))"
    done = shell.run([sys.executable, "-c", code], 10, cwd=tmp_path, env={"OELLM_X": "$(id)"})
    assert done.stdout == f"{tmp_path} $(id)\n"
    assert shell.run(["echo", "$HOME;", "`id`"], 10).stdout == "$HOME; `id`\n"


def test_run_timeout_is_a_timeout_and_shows_the_command() -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"sleep 30: no answer within 0.3 s"):
        shell.run(["sleep", "30"], 0.3)
    assert time.monotonic() - started < 5


def test_run_missing_executable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot start: No such file") as caught:
        shell.run(["oellm-no-such-command", "x"], 10)
    assert type(caught.value) is CommandError
    assert caught.value.argv == ["oellm-no-such-command", "x"]
    with pytest.raises(CommandError, match="missing"):
        shell.run(["true"], 10, cwd=tmp_path / "missing")


def test_spawn_detached_appends_output_in_a_new_session(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("before\n")
    code = "import os, sys; print(os.getsid(0), os.getcwd()); print('e', file=sys.stderr)"
    pid = shell.spawn_detached([sys.executable, "-c", code], tmp_path, None, log)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the child ended and was reaped (no zombie)"
    lines = log.read_text().splitlines()
    assert lines[0] == "before" and lines[1] == f"{pid} {tmp_path}" and lines[2] == "e"
    with pytest.raises(CommandError, match="cannot start"):
        shell.spawn_detached(["oellm-no-such-command"], tmp_path, None, log)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
