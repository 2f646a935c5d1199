"""A stage compiled by several processes (`compiler/fanout.py`) gives the bundle one process
gives, byte for byte, and the same first error; a worker that breaks or is killed is told,
and no worker process is left behind."""

from __future__ import annotations

import os
import pickle
import select
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oellm.cli import main
from oellm.compiler import fanout
from oellm.compiler.checking import CheckedFiles
from oellm.compiler.errors import ConfigError, Origin, fail
from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.staging import StagedFiles
from oellm.errors import OellmError
from tests.helpers import EXAMPLES, compile_file, rendered, write

EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yaml"))


@pytest.fixture
def processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Sets how many processes compile a stage (parts of one point at least); checks that
    none is left once the test is done."""

    def use(count: int) -> None:
        monkeypatch.setattr(fanout, "MIN_PART", 1)
        monkeypatch.setenv(fanout.WORKERS_ENV, str(count))

    yield use
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child of this process is left, ended or not


def _outcome(path: Path, overrides: tuple[str, ...] = ()) -> Any:
    try:
        bundle = compile_file(path, overrides, env={})
    except ConfigError as error:
        return rendered(error)
    return list(bundle.files.items()), bundle.lock


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.relative_to(EXAMPLES).stem)
def test_every_example_is_the_same_bundle_from_three_processes(path: Path, processes: Any) -> None:
    processes(1)
    one = _outcome(path)
    processes(3)
    three = _outcome(path)
    assert not isinstance(one, str)
    assert three == one  # the files in the same order, the same bytes, the same lock


SWEEP = """
project: {name: fan}
job:
  name: "f_${vars.a}_${vars.b}_${stage}"
backend: {bash: {command: 'echo "it''s $(id)" ${vars.a} ${vars.b} ${vars.note}'}}
vars: {a: 0, b: x, note: ""}
sweep:
  type: list
  groups:
    - params: {vars.a: [1, 2, 3, 4, 5, 6, 7], vars.b: [x, y.z, i+t]}
      defaults: {stage: stable}
    - params: {vars.a: [1, 2, 3, 4, 5, 6, 7], vars.b: [x, y.z, i+t]}
      defaults:
        stage: decay
        vars.note: "\\\\${sibling.stable.output_dir}/checkpoints"
      job.start_conditions:
        - class_name: FileExistsCondition
          path: "\\\\${sibling.stable.output_dir}/checkpoints/done.txt"
  filter: "\\\\${oc.eval:'not (\\\\${vars.a} == 3 and \\\\${vars.a} > 2)'}"
"""


@pytest.mark.parametrize("array", [False, True])
@pytest.mark.parametrize("count", [2, 4])
def test_stages_with_siblings_and_filters_are_the_same_bundle(
    tmp_path: Path, processes: Any, array: bool, count: int
) -> None:
    exp = write(tmp_path / "exp.yaml", SWEEP + f"slurm: {{array: {str(array).lower()}}}\n")
    processes(1)
    one = _outcome(exp)
    processes(count)
    many = _outcome(exp)
    assert not isinstance(one, str), one
    assert len(one[1].jobs) == 36  # 2 stages x 21 points, less vars.a == 3 in each
    assert many == one


def _staged(exp: Path, out: Path, count: int, processes: Any) -> dict[str, tuple[bytes, int]]:
    processes(count)
    assert main(["compile", str(exp), "-o", str(out)]) == 0
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_a_written_bundle_is_the_same_and_check_agrees(
    tmp_path: Path, processes: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", SWEEP)
    one = _staged(exp, tmp_path / "one", 1, processes)
    three = _staged(exp, tmp_path / "three", 3, processes)
    assert three == one
    # A recompile over a bundle links the files it holds already; with workers too.
    again = _staged(exp, tmp_path / "three", 3, processes)
    assert again == one
    capsys.readouterr()
    assert main(["compile", str(exp), "-o", str(tmp_path / "three"), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    # A change that reaches only the jobs of the second stage is found by --check.
    edited = write(tmp_path / "exp.yaml", SWEEP.replace("done.txt", "done2.txt"))
    assert main(["compile", str(edited), "-o", str(tmp_path / "three"), "--check"]) == 1


def _error_at(tmp_path: Path, bad: dict[int, str]) -> Path:
    """A sweep of 12 jobs, in order, where job `n` sets the config of `bad[n]`."""
    groups = "".join(
        f"    - params: {{vars.n: [{n}]}}\n      defaults: {bad.get(n, '{}')}\n" for n in range(12)
    )
    text = (
        "project: {name: errs}\n"
        'job: {name: "e_${vars.n}"}\n'
        'backend: {bash: {command: "echo ${vars.n}"}}\n'
        "vars: {n: 0}\n"
        "sweep:\n  type: list\n  groups:\n" + groups
    )
    return write(tmp_path / "exp.yaml", text)


@pytest.mark.parametrize(
    "bad",
    [
        {9: "{job.chain_repeat: 0}"},  # in the last worker's part
        {5: "{slurm.launch: sideways}", 10: "{job.chain_repeat: 0}"},  # the first of two
        {2: "{job.name: e_0}"},  # the name of another job, in another part
        {11: "{job.name: e_0}", 6: "{slurm.launch: per_gpu, slurm.use_srun: false}"},
    ],
)
def test_the_first_error_is_the_one_one_process_finds(
    tmp_path: Path, processes: Any, bad: dict[int, str]
) -> None:
    exp = _error_at(tmp_path, bad)
    processes(1)
    one = _outcome(exp)
    processes(4)
    four = _outcome(exp)
    assert isinstance(one, str), "the case must fail"
    assert four == one


def test_errors_survive_being_sent_back() -> None:
    error = fail("bad value", Origin("exp.yaml", 3, 7), key="a.b", hint="use c")
    sent = fanout._sendable(error)
    assert sent is error
    assert rendered(fanout.pickle.loads(fanout.pickle.dumps(sent))) == rendered(error)

    class Odd(OellmError):
        exit_code = 75

        def __init__(self, one: int, two: int) -> None:
            super().__init__(f"odd {one} {two}")

    odd = fanout._sendable(Odd(1, 2))
    assert type(odd) is OellmError and odd.render() == "odd 1 2" and odd.exit_code == 75


def _items(count: int) -> list[int]:
    return list(range(count))


def test_results_come_in_order_with_files_of_a_plain_mapping(processes: Any) -> None:
    files: dict[str, bytes] = {"first": b"0"}

    def work(n: int) -> int:
        files[f"f{n}"] = str(n).encode()
        return n * n

    told: list[int] = []
    out = list(fanout.fan_out(_items(500), work, files, 3, told.append))
    assert out == [n * n for n in range(500)]
    assert list(files) == ["first", *(f"f{n}" for n in range(500))]
    assert told == sorted(told) and told and told[-1] <= 500


def test_staged_files_of_workers_are_adopted(tmp_path: Path, processes: Any) -> None:
    with StagedFiles(tmp_path / "stage", tmp_path / "out", None) as files:

        def work(n: int) -> None:
            files[f"jobs/{n}.txt"] = str(n).encode()

        list(fanout.fan_out(_items(30), work, files, 3))
        assert list(files) == [f"jobs/{n}.txt" for n in range(30)]
        assert files["jobs/29.txt"] == b"29"


def test_checked_files_of_workers_are_adopted(tmp_path: Path, processes: Any) -> None:
    folder = tmp_path / "bundle"
    (folder / "jobs").mkdir(parents=True)
    for n in range(30):
        (folder / f"jobs/{n}.txt").write_bytes(str(n).encode())
    checked = CheckedFiles(folder)

    def work(n: int) -> None:
        checked[f"jobs/{n}.txt"] = b"changed" if n == 25 else str(n).encode()

    list(fanout.fan_out(_items(30), work, checked, 3))
    assert list(checked) == [f"jobs/{n}.txt" for n in range(30)]
    assert checked.same("jobs/3.txt") and not checked.same("jobs/25.txt")
    assert checked["jobs/25.txt"] == b"changed"
    assert not checked.up_to_date([f"jobs/{n}.txt" for n in range(30)])


def test_a_bug_in_a_worker_is_told_with_its_traceback(processes: Any) -> None:
    def work(n: int) -> int:
        if n == 250:
            raise KeyError("the bug")
        return n

    got: list[int] = []
    with pytest.raises(fanout.WorkerFailed, match="KeyError: 'the bug'") as caught:
        for n in fanout.fan_out(_items(300), work, {}, 3):
            got.append(n)
    assert got == list(range(250))  # what came before it, in order
    # One line for the terminal; the worker's traceback, as the cause, for the crash log.
    assert "\n" not in str(caught.value)
    assert "in work" in str(caught.value.__cause__)


def test_a_killed_worker_is_told(processes: Any) -> None:
    def work(n: int) -> int:
        if n == 299:
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    with pytest.raises(fanout.WorkerEnded, match="signal SIGKILL") as caught:
        list(fanout.fan_out(_items(300), work, {}, 3))
    assert fanout.WORKERS_ENV in (caught.value.hint or "")


def test_an_error_here_stops_the_workers(processes: Any) -> None:
    def work(n: int) -> int:
        if n == 5:
            raise fail("first")
        if n > 100:
            signal.pause()  # a worker that would never end by itself
        return n

    with pytest.raises(ConfigError, match="first"):
        list(fanout.fan_out(_items(300), work, {}, 3))


def test_leaving_early_stops_the_workers(processes: Any) -> None:
    def work(n: int) -> int:
        if n > 100:
            signal.pause()
        return n

    results = fanout.fan_out(_items(300), work, {}, 3)
    assert next(results) == 0
    results.close()


def test_a_stop_as_a_worker_is_being_received_stops_it(
    processes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM) landing when this process turns to a worker's results, before
    it has read any: that worker is stopped too, not left compiling into a folder being
    removed."""
    receive = fanout._receive
    turned_to: list[tuple[int, ...]] = []

    def stopped_at_once(*pipe: int) -> Any:
        turned_to.append(pipe)
        raise KeyboardInterrupt
        yield from receive(*pipe)  # never reached: a generator like the one it stands for

    monkeypatch.setattr(fanout, "_receive", stopped_at_once)

    def work(n: int) -> int:
        if n >= 100:
            signal.pause()  # the worker would never end by itself
        return n

    with pytest.raises(KeyboardInterrupt):
        list(fanout.fan_out(_items(300), work, {}, 3))
    assert len(turned_to) == 1  # the first worker's part; the fixture finds no worker left


def test_how_many_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.delenv(fanout.WORKERS_ENV, raising=False)
    assert fanout.workers(100) == 1  # too few points to share
    assert fanout.workers(10 * fanout.MIN_PART) == fanout.MAX_WORKERS
    assert fanout.workers(3 * fanout.MIN_PART) == 3
    monkeypatch.setenv(fanout.WORKERS_ENV, "1")
    assert fanout.workers(100_000) == 1
    monkeypatch.setenv(fanout.WORKERS_ENV, "2")
    assert fanout.workers(100_000) == 2
    for wrong in ("many", "0", "-2", "1.5"):
        monkeypatch.setenv(fanout.WORKERS_ENV, wrong)
        with pytest.raises(ConfigError, match="give a number of processes, 1 or more"):
            fanout.workers(100_000)


def test_a_wrong_number_of_processes_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(fanout.WORKERS_ENV, "two")
    exp = write(tmp_path / "exp.yaml", SWEEP)
    assert main(["compile", str(exp), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "OELLM_COMPILE_WORKERS='two': give a number of processes" in err
    assert "Traceback" not in err


def test_a_config_hook_compiles_in_one_process(tmp_path: Path, processes: Any) -> None:
    processes(3)
    exp = write(tmp_path / "exp.yaml", SWEEP)
    seen: list[str] = []
    pid = os.getpid()
    compile_bundle(
        CompileRequest(experiment=exp, bundle_dir=tmp_path / "b"),
        on_job=lambda name, job: seen.append(f"{name}@{os.getpid() == pid}"),
    )
    assert len(seen) == 36 and all(s.endswith("@True") for s in seen)


ORPHAN = """
import os, sys, time
from oellm.compiler import fanout

def work(n):
    if n == 50_100:  # in the second part: the worker's
        open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(0.01)
    return n

list(fanout.fan_out(list(range(100_000)), work, {}, 2))
"""


def test_a_worker_ends_soon_when_the_compile_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    compile_ = subprocess.Popen([sys.executable, "-c", ORPHAN, str(pid_file)])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        worker = int(pid_file.read_text())
    finally:
        compile_.kill()  # SIGKILL: no handler of the compile runs
        compile_.wait()
    deadline = time.monotonic() + 10  # a worker checks every 64 points (0.64 s here)
    while _alive(worker):
        assert time.monotonic() < deadline, "the worker outlived the compile"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An ended process not yet reaped by init is a zombie: it is not running.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _outcome_cli(
    exp: Path, out: Path, count: int, processes: Any, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    processes(count)
    capsys.readouterr()
    code = main(["compile", str(exp), "-o", str(out)])
    captured = capsys.readouterr()
    return code, captured.err.replace(str(out), "OUT")


def test_a_name_clash_across_processes_is_the_one_process_message(
    tmp_path: Path, processes: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Staged on disk: two processes make the same file, before the clash is found.
    exp = write(
        tmp_path / "exp.yaml",
        """
        project: {name: clash}
        job: {name: "c_${vars.a}"}
        backend: {bash: {command: "echo ${vars.a} ${vars.b}"}}
        vars: {a: 0, b: 0}
        sweep: {grids: [{vars.b: [0, 1, 2, 3], vars.a: [0, 1, 2]}]}
        """,
    )
    one = _outcome_cli(exp, tmp_path / "b1", 1, processes, capsys)
    assert one[0] == 2 and "two jobs are both named 'c_0'" in one[1], one
    for _ in range(3):  # which process makes a file first is a race
        assert _outcome_cli(exp, tmp_path / "b3", 3, processes, capsys) == one
        with pytest.raises(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)  # the workers are stopped before the error is told
    assert not list(tmp_path.glob(".b3*"))  # no staging folder left


def _deep(level: int) -> str:
    return "[" * 90 + f'"\\\\${{vars.l{level}}}"' + "]" * 90


def test_a_config_too_deep_in_a_worker_is_the_one_process_message(
    tmp_path: Path, processes: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = ", ".join(f"vars.l{n}: {_deep(n + 1)}" for n in range(29))
    chain += ", vars.l29: " + "[" * 90 + "1" + "]" * 90
    groups = "".join(
        f"    - params: {{vars.n: [{n}]}}\n" + (f"      defaults: {{{chain}}}\n" if n >= 8 else "")
        for n in range(12)
    )
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "project: {name: deep}\n"
        'job: {name: "d_${vars.n}"}\n'
        'backend: {bash: {command: "echo ${vars.n}"}}\n'
        "vars: {n: 0}\n"
        "sweep:\n  type: list\n  groups:\n" + groups
    )
    one = _outcome_cli(exp, tmp_path / "b", 1, processes, capsys)
    assert one[0] == 2 and "nested too deeply" in one[1], one
    assert _outcome_cli(exp, tmp_path / "b", 3, processes, capsys) == one


def test_a_worker_keeps_ctrl_c_ignored(processes: Any) -> None:
    # A compile started in the background of a script ignores SIGINT; so do its workers.
    def work(n: int) -> int:
        if n == 250:
            os.kill(os.getpid(), signal.SIGINT)
        return n

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert list(fanout.fan_out(_items(300), work, {}, 3)) == _items(300)
    finally:
        signal.signal(signal.SIGINT, before)


def test_results_that_cannot_be_sent_are_a_bug(processes: Any) -> None:
    with pytest.raises(fanout.WorkerFailed, match="cannot be sent"):
        list(fanout.fan_out(_items(10), lambda n: lambda: n, {}, 2))


def test_a_worker_that_cannot_be_forked_leaves_its_part_here(
    processes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fork
    forks: list[int] = []

    def limited() -> int:
        forks.append(1)
        if len(forks) >= 2:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real()

    monkeypatch.setattr(os, "fork", limited)
    open_before = len(os.listdir("/proc/self/fd"))
    assert list(fanout.fan_out(_items(400), lambda n: n * 2, {}, 4)) == [n * 2 for n in range(400)]
    assert len(forks) == 3  # one worker, then two refusals
    assert len(os.listdir("/proc/self/fd")) == open_before  # no pipe left open


def test_items_of_any_sequence(processes: Any) -> None:
    # A part of a tuple is a tuple: never taken for a worker.
    assert list(fanout.fan_out(tuple(range(300)), lambda n: n + 1, {}, 3)) == list(range(1, 301))


def _at_second_batch(monkeypatch: pytest.MonkeyPatch, act: Callable[[Any], None]) -> None:
    """`act(pipe)` as this process is about to read the second batch of a worker's results
    (then it reads it, unless `act` raised)."""
    real = pickle.load
    loads = 0

    def load(pipe: Any) -> Any:
        nonlocal loads
        loads += 1
        if loads == 2:
            act(pipe)
        return real(pipe)

    monkeypatch.setattr(pickle, "load", load)


@pytest.mark.parametrize("count", [2, 3])
def test_results_that_cannot_be_read_end_the_worker_still_sending(
    processes: Any, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """A batch this process cannot read, while the worker has more to send (blocked on a
    full pipe): the worker is told (its pipe closed) and ended, never waited for forever."""

    def damaged(pipe: Any) -> None:
        raise pickle.UnpicklingError("damaged batch")

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError("the compile waited for its worker forever")

    _at_second_batch(monkeypatch, damaged)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(30)
    try:
        with pytest.raises(fanout.WorkerFailed, match="results cannot be read"):
            # Four batches of about 1 MB each from the worker: far more than a pipe holds.
            # With three, the second worker was forked with the first one's pipe open.
            list(fanout.fan_out(_items(4096 * count), lambda n: str(n) * 200, {}, count))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_worker_killed_while_sending_is_told_as_killed(
    processes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed (out of memory, say) in the middle of its results: a batch cut short is not
    a bug in oellm but the worker's end, told as such with its hint."""

    def kill_workers(pipe: Any) -> None:
        # Once the worker is writing its second batch (blocked on the full pipe).
        select.select([pipe], [], [], 10)
        me = os.getpid()
        for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
            os.kill(int(child), signal.SIGKILL)

    _at_second_batch(monkeypatch, kill_workers)
    with pytest.raises(fanout.WorkerEnded, match="signal SIGKILL"):
        list(fanout.fan_out(_items(8192), lambda n: str(n) * 200, {}, 2))


def test_started_with_sigchld_ignored_it_compiles_in_one_process(
    processes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that ignores SIGCHLD hands that on: workers would be reaped by the system
    before they could be waited for (a crash, before)."""
    forks: list[int] = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        got = list(fanout.fan_out(_items(300), lambda n: n * 2, {}, 3))
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert got == [n * 2 for n in range(300)]
    assert forks == []
