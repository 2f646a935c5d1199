"""The one door to the shell (HOUSE_STYLE 3): the only module of the package that starts
processes. `run` waits for a command with a timeout and returns what it printed, without judging
the exit status; `spawn_detached` starts a process that outlives us (the local scheduler).
Each command is logged at INFO with its duration and exit status.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from oellm.errors import CommandError, CommandTimeout

log = logging.getLogger("oellm.shell")


@dataclass(frozen=True)
class Completed:
    """A finished command: what ran, its exit status and what it printed (decoded as UTF-8)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run `argv` (never through a shell) and wait at most `timeout` seconds.

    `env` replaces the environment, as in `subprocess`; None inherits ours. A timeout raises
    `CommandTimeout` (the child is killed); a command or folder that cannot be started raises
    `CommandError`. A non-zero exit status is returned, not raised: callers judge it.
    """
    args = [str(a) for a in argv]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            # Comments and names are user text; a stray byte must not crash an observation.
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        log.info("%s: no answer within %g s", _shown(args), timeout)
        partial = _text(exc.stdout) + _text(exc.stderr)
        raise CommandTimeout(args, f"no answer within {timeout:g} s", partial) from exc
    except OSError as exc:
        log.info("%s: %s", _shown(args), _cannot_start(exc))
        raise CommandError(args, _cannot_start(exc)) from exc
    log.info("%s: exit %d in %.3f s", _shown(args), proc.returncode, time.monotonic() - started)
    return Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def spawn_detached(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None,
    stdout_path: Path,
) -> int:
    """Start `argv` in a new session (it survives our exit and our terminal's signals), stdin
    from /dev/null, stdout and stderr appended to `stdout_path`; return its pid.

    `env` replaces the environment, as in `subprocess`; None inherits ours.
    """
    args = [str(a) for a in argv]
    try:
        with open(stdout_path, "ab") as output:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        raise CommandError(args, _cannot_start(exc)) from exc
    log.info("%s: started as pid %d", _shown(args), proc.pid)
    # Reap the child when it ends, so that a long-lived caller (a test run) does not see a
    # zombie that still answers `kill -0`. The thread dies with us; the child does not.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


def _shown(args: Sequence[str]) -> str:
    text = " ".join(args)
    return text if len(text) <= 300 else text[:300] + "..."


def _cannot_start(exc: OSError) -> str:
    # FileNotFoundError names either the executable or a missing cwd; say which.
    what = exc.strerror or type(exc).__name__
    return f"cannot start: {what}" + (f": {exc.filename}" if exc.filename else "")


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when text=True was asked for.
    if output is None:
        return ""
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else output
