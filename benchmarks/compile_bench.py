"""Compile benchmark: what `oellm compile` costs, case by case, beside the predecessor's figures.

    python benchmarks/compile_bench.py               # 1 .. 10,000 jobs, tmpfs and disk, arrays,
                                                     # two stages, startup, --check
    python benchmarks/compile_bench.py --large       # also 100,000 jobs
    python benchmarks/compile_bench.py --quick       # 1 .. 1,000 jobs only
    python benchmarks/compile_bench.py --markdown    # the README's table, from this run
    python benchmarks/compile_bench.py --repeat 5    # each figure the median of 5 runs (a
                                                     # shared machine's timings are noisy)

Each case runs `oellm compile` in a fresh process that writes a real bundle (its files staged
as they are compiled): its wall time includes starting Python, and its peak memory is that of
the largest of its processes. A stage of 1,000 jobs or more is compiled by one process per
core this one may use (at most 8, `compiler/fanout.py`); the rows marked "one process" set
OELLM_COMPILE_WORKERS=1, for the same case compiled by one. Another process compiles the same
bundle in memory and then writes it, for the two phases' times (and the cost per job);
100,000 jobs skip that one. "tmpfs" writes under /dev/shm, "disk" under the system's
temporary folder (or OELLM_BENCH_DISK); writing is durable either way (one sync of the file
system).

At 10,000 jobs the bundle just written is also copied with `cp -a` and synced (`sync -f`) in the
same folder: what creating and syncing those 20,002 files costs that file system whatever writes
them, the yardstick for the write phase. On a disk the two move together with its state: on ext4
without a journal each new inode is looked for past the inodes deleted in the last minutes in the
same block group (and a deletion waits for its discard on a disk mounted with `discard`), so a
case run right after earlier runs' folders were removed writes several times slower than one on
a disk left alone for a few minutes, and so does the copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import bytecode

from oellm.compiler import fanout

# A bundle compiled in memory, then written: the two phases timed apart.
PHASES = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from oellm.compiler.pipeline import CompileRequest, compile_bundle
    from oellm.compiler.write import write_bundle
    start = time.perf_counter()
    bundle = compile_bundle(CompileRequest(experiment=Path(sys.argv[1])))
    compiled = time.perf_counter()
    write_bundle(bundle, Path(sys.argv[2]))
    end = time.perf_counter()
    print(json.dumps({"jobs": len(bundle.lock.jobs), "compile": compiled - start,
                      "write": end - compiled}))
    """
)
# `oellm compile EXP -o OUT` as a user runs it (files staged as they are compiled), reporting
# its peak memory.
COMMAND = textwrap.dedent(
    """
    import json, resource, sys
    from oellm.cli import main
    code = main(["compile", sys.argv[1], "-o", sys.argv[2]])
    # The largest of its processes: a large stage is compiled by several (compiler/fanout.py).
    peak_kib = max(resource.getrusage(who).ru_maxrss
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    peak_mib = peak_kib / 1024
    print(json.dumps({"code": code, "peak_mib": peak_mib}), file=sys.stderr)
    """
)

# The predecessor's figures, as its own benchmark reported them (issue 15): compiling 1, 100,
# 1,000 and 10,000 jobs, its peak memory at 10,000, and its cost per job.
PREDECESSOR = {1: "0.69 s", 100: "2.18 s", 1_000: "11.9 s", 10_000: "147 s, 216 MB"}
PREDECESSOR_PER_JOB = "~13 ms"
ONE = "one process"  # OELLM_COMPILE_WORKERS=1


def grid(n: int, m: int, array: bool = False) -> str:
    """n x m jobs of the bash backend; with `array`, submitted as SLURM job arrays."""
    a = ", ".join(str(i) for i in range(n))
    b = ", ".join(str(i) for i in range(m))
    return textwrap.dedent(
        f"""
        project: {{name: bench}}
        job: {{name: "bench_${{vars.a}}_${{vars.b}}"}}
        backend: {{bash: {{command: "echo ${{vars.a}} ${{vars.b}}"}}}}
        vars: {{a: 0, b: 0}}
        slurm: {{array: {"true" if array else "false"}, limits: {{max_jobs: 1000000}}}}
        sweep:
          grids:
            - vars.a: [{a}]
              vars.b: [{b}]
        """
    )


def two_stage(n: int) -> str:
    values = ", ".join(str(i) for i in range(n))
    return textwrap.dedent(
        f"""
        project: {{name: bench}}
        job: {{name: "bench_${{vars.a}}_${{stage}}"}}
        backend: {{bash: {{command: "echo ${{vars.a}} ${{vars.note}}"}}}}
        vars: {{a: 0, note: ""}}
        sweep:
          type: list
          groups:
            - params: {{vars.a: [{values}]}}
              defaults: {{stage: stable}}
            - params: {{vars.a: [{values}]}}
              defaults:
                stage: decay
                vars.note: "\\\\${{sibling.stable.output_dir}}/checkpoints"
              job.start_conditions:
                - class_name: FileExistsCondition
                  path: "\\\\${{sibling.stable.output_dir}}/checkpoints/done.txt"
        """
    )


@dataclass(frozen=True)
class Row:
    case: str
    where: str
    jobs: int
    wall: float  # `oellm compile`, the whole process, Python's start included
    compile: float | None  # in memory, in a process of its own
    write: float | None  # that bundle written
    peak_mib: float  # of `oellm compile`
    copy: float | None = None  # that bundle copied by `cp -a` and synced, in the same folder

    @property
    def per_job_ms(self) -> float | None:
        return None if self.compile is None else self.compile / self.jobs * 1000


def compile_case(
    case: str,
    text: str,
    where: Path,
    label: str,
    phases: bool = True,
    repeat: int = 1,
    copy: bool = False,
    env: dict[str, str] | None = None,
) -> Row:
    """`oellm compile` (wall time, peak memory); then, with `phases`, the same bundle compiled
    in memory and written, in another process, for the phases' times; then, with `copy`, that
    bundle copied and synced (`copy_bundle`). With `repeat`, each time is the median of that
    many runs, and the peak the highest."""
    walls: list[float] = []
    peaks: list[float] = []
    compiles: list[float] = []
    writes: list[float] = []
    copies: list[float] = []
    jobs = 0
    # On a disk, each run's folders are kept until the case is done: deleting a bundle just
    # before the next run writes beside it slows that run's file creation (see above). On
    # tmpfs they go at once (kept, a 100,000-job case would hold gigabytes of memory).
    with contextlib.ExitStack() as kept:
        for _ in range(repeat):
            if label != "disk":
                kept.close()  # the last run's folder
            tmp = kept.enter_context(tempfile.TemporaryDirectory(dir=where))
            exp = Path(tmp) / "exp.yaml"
            exp.write_text(text)
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", COMMAND, str(exp), str(Path(tmp) / "bundle")],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            walls.append(time.perf_counter() - start)
            peaks.append(json.loads(done.stderr.strip().splitlines()[-1])["peak_mib"])
            # From the command's own line ("wrote DIR: N jobs, ..."): reading a large lockfile
            # here would grow this process, and Linux hands a parent's peak memory on to its
            # children.
            found = re.search(r": (\d+) jobs?,", done.stdout)
            assert found is not None, done.stdout
            jobs = int(found.group(1))
            if not phases:
                continue
            out = subprocess.run(
                [sys.executable, "-c", PHASES, str(exp), str(Path(tmp) / "again")],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            if copy:
                copies.append(copy_bundle(Path(tmp) / "again", Path(tmp) / "copy"))
            r = json.loads(out.stdout)
            compiles.append(r["compile"])
            writes.append(r["write"])
    median = statistics.median
    if not phases:
        return Row(case, label, jobs, median(walls), None, None, max(peaks))
    copied = median(copies) if copies else None
    return Row(
        case, label, jobs, median(walls), median(compiles), median(writes), max(peaks), copied
    )


def copy_bundle(bundle: Path, copy: Path) -> float:
    """Seconds to copy a written bundle with `cp -a` beside it and sync that file system with
    `sync -f` (syncfs(2), as the write phase does): the same files written by another
    program, on the same file system, in the same state."""
    start = time.perf_counter()
    subprocess.run(["cp", "-a", str(bundle), str(copy)], check=True)
    subprocess.run(["sync", "-f", str(copy)], check=True)
    return time.perf_counter() - start


def startup(runs: int = 7) -> float:
    """`oellm --version`, median wall time of fresh processes."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "oellm", "--version"], check=True, capture_output=True
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_unchanged(
    n: int, m: int, where: Path, repeat: int = 1, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """`oellm compile --check` of an unchanged bundle (each file compared with the one on
    disk as it is compiled): wall time (the median of `repeat` runs) and exit code."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        exp = Path(tmp) / "exp.yaml"
        exp.write_text(grid(n, m))
        bundle = Path(tmp) / "bundle"
        command = [sys.executable, "-m", "oellm", "compile", str(exp), "-o", str(bundle)]
        subprocess.run(command, check=True, capture_output=True)
        walls = []
        for _ in range(repeat):
            start = time.perf_counter()
            done = subprocess.run([*command, "--check"], capture_output=True, env=env)
            walls.append(time.perf_counter() - start)
        return statistics.median(walls), done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 .. 1,000 jobs only")
    parser.add_argument("--large", action="store_true", help="also 100,000 jobs")
    parser.add_argument("--markdown", action="store_true", help="print the README's table")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="the median of N runs of each case"
    )
    args = parser.parse_args()
    bytecode.cached()
    print(
        f"processes compiling a stage of 10,000 jobs: {fanout.workers(10_000)} "
        f"(cores this process may use: {len(os.sched_getaffinity(0))})",
        file=sys.stderr,
    )
    repeat = max(1, args.repeat)
    tmpfs = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    disk = Path(os.environ.get("OELLM_BENCH_DISK", tempfile.gettempdir()))
    sizes = [(1, 1), (10, 10), (10, 100)]
    if not args.quick:
        sizes.append((100, 100))
    if args.large:
        sizes.append((100, 1000))
    places = (("tmpfs", tmpfs), ("disk", disk))
    can_copy = shutil.which("cp") is not None and shutil.which("sync") is not None
    rows: list[Row] = []
    for n, m in sizes:
        for label, where in places:
            if n * m > 10_000 and label == "disk":
                continue  # 100,000 files on a shared disk measure the disk, not oellm
            # 100,000 jobs in memory would measure that, not what `oellm compile` does.
            phases = n * m <= 10_000
            copy = n * m == 10_000 and can_copy
            case = f"grid {n} x {m}"
            rows.append(compile_case(case, grid(n, m), where, label, phases, repeat, copy))
            _progress(rows[-1])
    extra = [("arrays 10 x 100", grid(10, 100, array=True))]
    if not args.quick:
        extra += [
            ("arrays 100 x 100", grid(100, 100, array=True)),
            ("two stages 2 x 1,000", two_stage(1000)),
        ]
    for case, text in extra:
        rows.append(compile_case(case, text, tmpfs, "tmpfs", repeat=repeat))
        _progress(rows[-1])
    # The same compile in one process: what the worker processes of a large stage bring.
    one = {**os.environ, fanout.WORKERS_ENV: "1"}
    if not args.quick:
        case = f"grid 100 x 100, {ONE}"
        rows.append(compile_case(case, grid(100, 100), tmpfs, "tmpfs", True, repeat, env=one))
        _progress(rows[-1])
    started = startup()
    check_size = (10, 100) if args.quick else (100, 100)
    checked = check_size[0] * check_size[1]
    checks = {label: check_unchanged(*check_size, where, repeat) for label, where in places}
    checks[f"tmpfs, {ONE}"] = check_unchanged(*check_size, tmpfs, repeat, one)
    print(file=sys.stderr)
    print(f"startup (oellm --version): {started:.3f} s", file=sys.stderr)
    for label, (wall, code) in checks.items():
        print(
            f"compile --check of an unchanged {checked:,}-job bundle, {label}: {wall:.2f} s "
            f"(exit {code})",
            file=sys.stderr,
        )
    if args.markdown:
        print(markdown(rows, started, checked, {k: wall for k, (wall, _) in checks.items()}))
    return 0


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s"


def _progress(row: Row) -> None:
    per_job = "" if row.per_job_ms is None else f"{row.per_job_ms:.3f} ms/job"
    copied = "" if row.copy is None else f"  cp -a + sync -f {row.copy:.2f} s"
    print(
        f"{row.case:<22} {row.where:<5} {row.jobs:>7} jobs  wall {row.wall:7.2f} s  "
        f"compile {_seconds(row.compile):>8}  write {_seconds(row.write):>7}  "
        f"{per_job:>13}  peak {row.peak_mib:5.0f} MiB{copied}",
        file=sys.stderr,
    )


def markdown(rows: list[Row], started: float, checked: int, checks: dict[str, float]) -> str:
    lines = [
        "| case | jobs | written to | wall (process) | compile | write | per job | peak memory "
        "| predecessor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        before = PREDECESSOR.get(row.jobs, "") if row.case.startswith("grid") else ""
        per_job = "" if row.per_job_ms is None else f"{row.per_job_ms:.3f} ms"
        lines.append(
            f"| {row.case} | {row.jobs:,} | {row.where} | {row.wall:.2f} s "
            f"| {_seconds(row.compile)} | {_seconds(row.write)} | {per_job} "
            f"| {row.peak_mib:.0f} MiB | {before} |"
        )
        if row.copy is not None and row.write is not None:
            lines.append(
                f"| baseline: that bundle copied (`cp -a` + `sync -f`); write / copy = "
                f"{row.write / row.copy:.2f} | {row.jobs:,} | {row.where} | | "
                f"| {row.copy:.2f} s | | | |"
            )
    lines.append(f"| startup: `oellm --version` | | | {started:.2f} s | | | | | |")
    for label, wall in checks.items():
        lines.append(
            f"| `compile --check`, unchanged bundle | {checked:,} | {label} | {wall:.2f} s "
            f"| | | | | |"
        )
    lines.append(f"| in-process cost per job (predecessor) | | | | | | {PREDECESSOR_PER_JOB} | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
