"""A compile stopped from outside (`kill`, a closed terminal, Ctrl-C) leaves the bundle as it
was and no staging folder behind; a step that must not stop half-way (the swap of a bundle's
folders) finishes first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.write import stage, write_bundle
from oellm.errors import Terminated
from oellm.stopping import signals_held, terminable


def _experiment(path: Path, jobs: int) -> Path:
    values = ", ".join(str(i) for i in range(jobs))
    path.write_text(
        "project: {name: stopping}\n"
        'job: {name: "stop_${vars.a}"}\n'
        'backend: {bash: {command: "echo ${vars.a}"}}\n'
        "vars: {a: 0}\n"
        "slurm: {limits: {max_jobs: 1000000}}\n"
        f"sweep:\n  params: {{vars.a: [{values}]}}\n"
    )
    return path


def _compile(exp: Path, out: Path, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "OELLM_COMPILE_WORKERS": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "oellm", "compile", str(exp), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def _staged_files(parent: Path, name: str) -> int:
    """How many job files the staging folder of `name` holds so far (0: none yet)."""
    for folder in parent.glob(f".{name}.new-*"):
        try:
            return len(os.listdir(folder / "jobs"))
        except FileNotFoundError:
            return 0
    return 0


def _compiling(cmdline_part: str) -> list[int]:
    """The running processes whose command line holds `cmdline_part` (a compile's workers
    are forked: they have its command line), zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if cmdline_part in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _wait_for_staging(tmp_path: Path, compile_: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while _staged_files(tmp_path, "b") < 200:
        assert compile_.poll() is None, compile_.communicate()
        assert time.monotonic() < deadline, "the compile never staged its files"
        time.sleep(0.01)


def _stopped_midway(
    exp: Path, out: Path, signals: list[signal.Signals], gap: float = 0.0, **popen: Any
) -> tuple[int, str, str]:
    """`oellm compile exp -o out`, sent `signals` (`gap` seconds apart) once it staged 200
    files: its exit code, output and errors (killed if it never ends)."""
    compile_ = _compile(exp, out, **popen)
    try:
        _wait_for_staging(out.parent, compile_)
        for number, signum in enumerate(signals):
            if number:
                time.sleep(gap)
            compile_.send_signal(signum)
        stdout, stderr = compile_.communicate(timeout=120)
    finally:
        if compile_.poll() is None:
            compile_.kill()
            compile_.wait()
    return compile_.returncode, stdout, stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stopped_compile_leaves_the_bundle_and_no_staging_folder(
    tmp_path: Path, signum: signal.Signals
) -> None:
    small = _experiment(tmp_path / "small.yaml", 3)
    done = _compile(small, tmp_path / "b")
    assert done.wait(60) == 0, done.communicate()
    before = (tmp_path / "b" / "plan.lock.json").read_bytes()
    exp = _experiment(tmp_path / "exp.yaml", 20_000)
    code, _, err = _stopped_midway(exp, tmp_path / "b", [signum])
    assert code == 128 + signum, err
    assert f"stopped by {signum.name}" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "exp.yaml", "small.yaml"]
    assert (tmp_path / "b" / "plan.lock.json").read_bytes() == before
    deadline = time.monotonic() + 10
    while _compiling(str(exp)):
        assert time.monotonic() < deadline, "a worker outlived the stopped compile"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("first", "then"),
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)],
    ids=["SIGTERM then Ctrl-C", "Ctrl-C then SIGTERM"],
)
@pytest.mark.parametrize("gap", [0.0, 0.02, 0.05])
def test_a_second_signal_while_it_cleans_up_does_not_stop_the_cleanup(
    tmp_path: Path, first: signal.Signals, then: signal.Signals, gap: float
) -> None:
    exp = _experiment(tmp_path / "exp.yaml", 20_000)
    code, _, err = _stopped_midway(exp, tmp_path / "b", [first, then], gap)
    # Ended by the first signal's code, or (the second arriving as Python ends, which gives
    # every handler back to the system) by the second signal itself: cleaned up either way.
    assert code in (130, 143, -signal.SIGTERM, -signal.SIGINT), err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_a_compile_started_with_sigterm_ignored_goes_on(tmp_path: Path) -> None:
    exp = _experiment(tmp_path / "exp.yaml", 5_000)

    def ignore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    code, out, err = _stopped_midway(exp, tmp_path / "b", [signal.SIGTERM], preexec_fn=ignore)
    assert code == 0, err
    assert "wrote" in out and "5000 jobs" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "exp.yaml"]


def test_signals_wait_for_the_end_of_a_held_block() -> None:
    reached = False
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # delivered here, it would interrupt the block
        reached = True
    assert reached


def test_terminable_raises_once_and_gives_the_handlers_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert before is signal.SIG_DFL
    with pytest.raises(Terminated) as caught, terminable():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert caught.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_a_signal_between_the_two_renames_of_the_swap_waits_for_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after the old bundle was moved aside and before the new one took its place,
    the bundle would be in neither place: the swap holds the signal until both are done."""
    out = tmp_path / "b"
    first = compile_bundle(CompileRequest(experiment=_experiment(tmp_path / "a.yaml", 2)))
    write_bundle(first, out)
    request = CompileRequest(experiment=_experiment(tmp_path / "c.yaml", 3), bundle_dir=out)
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def rename(source: Any, target: Any) -> None:
        real_rename(source, target)
        renames.append((str(source), str(target)))
        if len(renames) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    import oellm.compiler.write as write

    monkeypatch.setattr(write.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt), stage(out) as files:
        write_bundle(compile_bundle(request, files=files), out)
    assert len(renames) == 2
    assert ".b.old-" in renames[0][1] and renames[1][1] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b", "c.yaml"]
    # The new bundle is in place, whole.
    assert sorted(p.name for p in (out / "jobs").glob("*.sbatch")) == [
        "stop_0.sbatch",
        "stop_1.sbatch",
        "stop_2.sbatch",
    ]


def test_a_state_change_made_with_the_swap_is_not_parted_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What runs with the swap (a state dir that moves with the bundle) and the swap are one
    stretch: a signal in between acts after both."""
    out = tmp_path / "b"
    write_bundle(
        compile_bundle(CompileRequest(experiment=_experiment(tmp_path / "a.yaml", 2))), out
    )
    request = CompileRequest(experiment=_experiment(tmp_path / "c.yaml", 3), bundle_dir=out)
    done: list[str] = []

    def state_change() -> None:
        done.append("state moved")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)

    with pytest.raises(KeyboardInterrupt), stage(out) as files:
        write_bundle(compile_bundle(request, files=files), out, with_swap=state_change)
    assert done == ["state moved"]
    assert len(list((out / "jobs").glob("*.sbatch"))) == 3, "swapped too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b", "c.yaml"]


def test_a_swap_whose_second_rename_fails_puts_the_old_bundle_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "b"
    write_bundle(
        compile_bundle(CompileRequest(experiment=_experiment(tmp_path / "a.yaml", 2))), out
    )
    before = (out / "plan.lock.json").read_bytes()
    request = CompileRequest(experiment=_experiment(tmp_path / "c.yaml", 3), bundle_dir=out)
    real_rename = os.rename
    calls: list[str] = []

    def rename(source: Any, target: Any) -> None:
        calls.append(str(target))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_rename(source, target)

    import oellm.compiler.write as write

    with pytest.raises(OSError, match="Input/output error"), stage(out) as files:
        bundle = compile_bundle(request, files=files)
        monkeypatch.setattr(write.os, "rename", rename)
        write_bundle(bundle, out)
    monkeypatch.undo()
    assert (out / "plan.lock.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b", "c.yaml"]


def test_a_stop_told_on_a_terminal_that_is_gone_still_ends_with_its_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import click

    from oellm.guard import guarded

    def echo(*args: Any, **kwargs: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(click, "echo", echo)

    @guarded
    def hung_up() -> int:
        raise Terminated(signal.SIGHUP)

    @guarded
    def interrupted() -> int:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as ended:
        hung_up()
    assert ended.value.code == 128 + signal.SIGHUP
    with pytest.raises(SystemExit) as ended:
        interrupted()
    assert ended.value.code == 130


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_reconcile_stopped_from_outside_releases_the_state_lock(
    tmp_path: Path, signum: int
) -> None:
    """cron's `timeout` (SIGTERM) or a closed terminal (SIGHUP) during `reconcile --wait`: it
    unwinds as on Ctrl-C and releases the lock, which would otherwise hold other rounds off
    for its lease."""
    (tmp_path / "exp.yaml").write_text(
        "project: {name: held}\nbackend: {bash: {command: 'sleep 10'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OUTPUT_DIR"}
    run = [sys.executable, "-m", "oellm"]
    subprocess.run([*run, "compile", "exp.yaml", "-o", "b"], cwd=tmp_path, env=env, check=True)
    lock = tmp_path / "output" / ".oellm" / "held" / "reconcile.lock"
    waiting = subprocess.Popen(
        [*run, "reconcile", "b", "--wait", "--interval", "0.2", "--scheduler", "local"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the reconcile never took the lock"
    time.sleep(1.0)  # its first round is done: it sleeps between rounds, or runs one
    waiting.send_signal(signum)
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert "Traceback" not in err
    assert not lock.exists()
