"""Reconcile benchmark on the real local SLURM: what a round and `oellm cancel` cost.

    python benchmarks/reconcile_bench.py                # every case below, 10,000 jobs
    python benchmarks/reconcile_bench.py --jobs 1000 --queued 100 --repeats 1   # quicker
    python benchmarks/reconcile_bench.py --markdown     # the README's table, from this run
    python benchmarks/reconcile_bench.py --only mixed   # one case (mixed, never, arrays, first)

Cases, each run `--repeats` times (the table shows the median). Each case first times the
rounds that submit its queued jobs (within their budgets, as many rounds as it takes) and the
round after them, which records the first state of every job submitted; then it waits until
slurmdbd has stored every job record (`sdiag`) before the no-op rounds:
- mixed: N jobs of which `--queued` are queued (held: `#SBATCH --hold`) and the others
  recorded as completed (the benchmark writes their records as a round does): a no-op round,
  then `oellm cancel` of the bundle.
- never: `oellm cancel` of N jobs never submitted (each gets its drop record).
- arrays: the N jobs as SLURM job arrays, all tasks queued: a no-op round, then `oellm cancel`.
- first: the first round of `--first` jobs, then of as many array tasks, submitting them all:
  timed on one bundle, and on another under `strace -c`, for the file system calls each job
  submitted costs (at a site, each is a round trip to the metadata server).

Every SLURM command is counted through shims on PATH. When strace is installed, one no-op
round also runs under `strace -c` (the oellm process itself, not the SLURM commands it starts)
and its file system calls are counted. Needs the cluster (`bash tests/slurm/cluster.sh up`);
cancels its jobs at the end. Between repeats it waits until slurmctld has let go of the jobs
just cancelled (MinJobAge): submitting next to them would meet MaxJobCount, and sbatch then
waits and retries. The machine is shared: times are noisy, read the median.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import bytecode
from reconcile_table import FS_CALLS, Row, describe, markdown, plain

from oellm.reconciler import tags

TOOLS = ("sbatch", "squeue", "sacct", "scancel")


class Bench:
    def __init__(self, tmp: Path, jobs: int) -> None:
        self.tmp = tmp
        self.jobs = jobs
        self.log = tmp / "calls.log"
        self.env = {**shims(tmp / "shims", self.log), "OUTPUT_DIR": str(tmp / "out")}
        self.prefixes: list[str] = []

    def compile(self, name: str, array: bool, jobs: int | None = None) -> Path:
        values = ", ".join(str(i) for i in range(self.jobs if jobs is None else jobs))
        exp = self.tmp / f"{name}.yaml"
        exp.write_text(
            f"project: {{name: {name}}}\n"
            f'job: {{name: "{name}_${{vars.i}}"}}\n'
            "vars: {i: 0}\n"
            'backend: {bash: {command: "sleep 1"}}\n'
            f"slurm: {{array: {'true' if array else 'false'}, sbatch: {{hold: true}}}}\n"
            f"sweep:\n  params: {{vars.i: [{values}]}}\n"
        )
        bundle = self.tmp / name
        subprocess.run(
            [sys.executable, "-m", "oellm", "compile", str(exp), "-o", str(bundle)],
            env=self.env,
            check=True,
            capture_output=True,
        )
        from oellm.reconciler.bundle import load_bundle
        from oellm.reconciler.session import project_key

        self.prefixes.append(tags.prefix(project_key(load_bundle(bundle, check_scripts=False))))
        return bundle

    def oellm(
        self, *argv: str, ok: Sequence[int] = (0, 1)
    ) -> tuple[float, collections.Counter[str]]:
        self.log.write_text("")
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "oellm", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - start
        if run.returncode not in ok:
            sys.exit(f"oellm {' '.join(argv)} failed ({run.returncode}): {run.stderr[-2000:]}")
        return seconds, collections.Counter(self.log.read_text().split())

    def strace(self, bundle: Path) -> dict[str, int] | None:
        if shutil.which("strace") is None:
            return None
        out = self.tmp / "strace.txt"
        subprocess.run(
            [
                "strace",
                "-c",
                "-o",
                str(out),
                "-e",
                "trace=%file,read,write,fsync,fdatasync,getdents64,fstat",
                sys.executable,
                "-m",
                "oellm",
                "reconcile",
                str(bundle),
            ],
            env=self.env,
            capture_output=True,
            check=False,
        )
        counts: dict[str, int] = {}
        for line in out.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[-1].isidentifier() and fields[3].isdigit():
                counts[fields[-1]] = int(fields[3])
        summed = {name: sum(counts.get(c, 0) for c in calls) for name, calls in FS_CALLS.items()}
        summed["total"] = sum(counts.values())
        return summed

    def cleanup(self) -> None:
        for prefix in self.prefixes:
            cancel_own_jobs(prefix)


def shims(folder: Path, log: Path) -> dict[str, str]:
    folder.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        if real is None:
            sys.exit(f"{tool} not found: start the cluster with bash tests/slurm/cluster.sh up")
        shim = folder / tool
        shim.write_text(f'#!/bin/sh\necho {tool} >> "{log}"\nexec {real} "$@"\n')
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def own_jobs(prefix: str, ended: bool = False) -> list[str]:
    """The job ids (an array's as a whole) of every job queued or running (`ended`: every
    job slurmctld still holds) whose tag (read from its job name) starts with `prefix`."""
    states = ["-t", "all"] if ended else []
    listed = subprocess.run(
        ["squeue", "--me", *states, "--noheader", "--format=%i|%j"],
        capture_output=True,
        text=True,
    )
    return sorted(
        {
            job_id.split("_", 1)[0]
            for job_id, _, name in (line.partition("|") for line in listed.stdout.splitlines())
            if tags.tag_of(name).startswith(prefix)
        }
    )


def cancel_own_jobs(prefix: str) -> None:
    """Every job whose tag starts with `prefix`; an array as a whole (by its job id)."""
    ids = own_jobs(prefix)
    for start in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[start : start + 500]], check=False)


def forgotten(prefix: str, timeout: float = 300.0) -> None:
    """Wait until slurmctld no longer holds the jobs of `prefix` (it keeps an ended job for
    MinJobAge): the next setup's submissions would otherwise meet MaxJobCount, and sbatch
    waits and retries until old jobs are purged, which times SLURM, not oellm."""
    deadline = time.monotonic() + timeout
    while own_jobs(prefix, ended=True):
        if time.monotonic() > deadline:
            print("slurmctld still holds cancelled jobs; going on", file=sys.stderr)
            return
        time.sleep(2)


def fresh_state(bundle: Path) -> Path:
    from oellm.reconciler.bundle import load_bundle

    state = load_bundle(bundle, check_scripts=False).state_path
    shutil.rmtree(state, ignore_errors=True)
    return state


def record_completed(bundle: Path, names: Sequence[str]) -> None:
    """Records of jobs that ran and completed, as the round that saw them end writes them."""
    from oellm.reconciler.model import Attempt
    from oellm.reconciler.session import Session

    session = Session(bundle, "slurm", allow_edited=True)
    stamp = datetime.now(timezone.utc).isoformat()
    done = [
        Attempt(
            job=name,
            attempt=1,
            tag=f"{session.prefix}{name}.1",
            bundle_id=session.bundle.bundle_id,
            script_sha256=session.bundle.job(name).sha256,
            scheduler="slurm",
            cause="ready",
            phase="finished",
            intent_at=stamp,
            job_id=str(10_000_000 + number),
            submitted_at=stamp,
            final_state="COMPLETED",
            exit_code=0,
            ended_at=stamp,
            last_state="COMPLETED",
        )
        for number, name in enumerate(names)
    ]
    session.records.write_batch(done, [])
    session.claim()


def settle(bench: Bench, bundle: Path) -> tuple[float, float]:
    """Submit what is ready (in as many rounds as the round's budgets take), then one round
    that records the first states: afterwards rounds are no-ops. Returns the time of the
    rounds that submitted, and of the one that recorded the first states."""
    submit = 0.0
    while True:
        seconds, calls = bench.oellm("reconcile", str(bundle))
        submit += seconds
        if not calls["sbatch"]:
            break
    states, _ = bench.oellm("reconcile", str(bundle))
    dbd_settled()
    return submit, states


def dbd_settled(timeout: float = 120.0) -> None:
    """Wait until slurmctld has handed every job record to slurmdbd (`sdiag`: DBD Agent queue
    size 0): right after a burst of submissions sacct answers slowly while slurmdbd stores
    them, which a no-op round minutes later at a site does not see."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(["sdiag"], capture_output=True, text=True, check=False)
        found = re.search(r"DBD Agent queue size:\s*(\d+)", done.stdout)
        if found is None or found.group(1) == "0":
            return
        time.sleep(1)
    print("slurmdbd still storing job records; timing anyway", file=sys.stderr)


def noop_and_cancel(
    bench: Bench,
    setup: Callable[[int], tuple[Path, tuple[float, float]]],
    repeats: int,
    label: str,
    jobs_label: str,
    rounds: int,
) -> list[Row]:
    noop: list[float] = []
    cancel: list[float] = []
    submits: list[float] = []
    states: list[float] = []
    noop_calls = cancel_calls = ""
    fs = None
    for rep in range(repeats):
        bundle, (submit, first_states) = setup(rep)
        submits.append(submit)
        states.append(first_states)
        print(
            f"{label}: setup {rep + 1} submitted in {submit:.1f} s, first states recorded in "
            f"{first_states:.1f} s",
            file=sys.stderr,
        )
        if rep == 0:
            for _ in range(rounds):
                seconds, calls = bench.oellm("reconcile", str(bundle), ok=(0,))
                noop.append(seconds)
                noop_calls = describe(calls)
                print(f"{label}: no-op round {seconds:.2f} s {dict(calls)}", file=sys.stderr)
            fs = bench.strace(bundle)
        seconds, calls = bench.oellm("cancel", str(bundle))
        cancel.append(seconds)
        cancel_calls = describe(calls)
        print(f"{label}: cancel {seconds:.2f} s {dict(calls)}", file=sys.stderr)
        cancel_own_jobs(bench.prefixes[-1])
        if rep + 1 < repeats:
            forgotten(bench.prefixes[-1])
    return [
        Row(f"first rounds (submitting), {label}", jobs_label, submits, ""),
        Row(f"round recording the first states, {label}", jobs_label, states, ""),
        Row(f"no-op round, {label}", jobs_label, noop, noop_calls, fs),
        Row(f"`oellm cancel`, {label}", jobs_label, cancel, cancel_calls),
    ]


def first_rounds(bench: Bench, jobs: int) -> list[Row]:
    """The first round of `jobs` plain jobs, then of as many array tasks: timed on one bundle,
    and the same round of another under strace (another project: tags of its own)."""
    rows = []
    for array in (False, True):
        kind = "array tasks" if array else "jobs"
        bundles = [bench.compile(f"rbfirst{'a' if array else 'j'}{n}", array, jobs) for n in (0, 1)]
        for bundle in bundles:
            fresh_state(bundle)
        seconds, calls = bench.oellm("reconcile", str(bundles[0]))
        cancel_own_jobs(bench.prefixes[-2])
        fs = bench.strace(bundles[1])
        cancel_own_jobs(bench.prefixes[-1])
        print(f"first round, {jobs:,} {kind}: {seconds:.2f} s {dict(calls)} {fs}", file=sys.stderr)
        rows.append(Row(f"first round, {jobs:,} {kind} submitted", f"{jobs:,}", [seconds],
                        describe(calls), fs))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--queued", type=int, default=1000, help="queued jobs of the mixed case")
    parser.add_argument("--rounds", type=int, default=3, help="no-op rounds to time")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each cancel")
    parser.add_argument("--first", type=int, default=1000, help="jobs of the first case")
    parser.add_argument("--only", default="mixed,never,arrays,first", help="cases, comma-separated")
    parser.add_argument("--markdown", action="store_true", help="print the README's table")
    args = parser.parse_args()
    bytecode.cached()
    cases = set(args.only.split(","))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        bench = Bench(Path(tmp_name), args.jobs)
        try:
            if "mixed" in cases:
                # A bundle of its own each time: the same tags would find (and adopt) the
                # jobs the last time cancelled rather than submit new ones.
                def mixed(rep: int) -> tuple[Path, tuple[float, float]]:
                    name = f"rbmixed{rep}"
                    bundle = bench.compile(name, array=False)
                    fresh_state(bundle)
                    record_completed(bundle, [f"{name}_{i}" for i in range(args.queued, args.jobs)])
                    return bundle, settle(bench, bundle)

                label = f"{args.jobs:,} jobs, {args.queued:,} queued"
                rows += noop_and_cancel(
                    bench, mixed, args.repeats, label, f"{args.jobs:,}", args.rounds
                )
            if "never" in cases:
                bundle = bench.compile("rbnever", array=False)
                seconds = []
                calls = ""
                for _ in range(args.repeats):
                    fresh_state(bundle)
                    took, counted = bench.oellm("cancel", str(bundle))
                    seconds.append(took)
                    calls = describe(counted)
                label = f"`oellm cancel`, {args.jobs:,} jobs never submitted"
                rows.append(Row(label, f"{args.jobs:,}", seconds, calls))
            if "arrays" in cases:

                def arrays(rep: int) -> tuple[Path, tuple[float, float]]:
                    bundle = bench.compile(f"rbarrays{rep}", array=True)
                    fresh_state(bundle)
                    return bundle, settle(bench, bundle)

                label = f"{args.jobs:,} array tasks queued"
                rows += noop_and_cancel(
                    bench, arrays, args.repeats, label, f"{args.jobs:,}", args.rounds
                )
            if "first" in cases:
                rows += first_rounds(bench, args.first)
        finally:
            bench.cleanup()
    print(markdown(rows) if args.markdown else plain(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
