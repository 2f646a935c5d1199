"""Compile benchmark: what `oellm compile` costs, case by case, beside the predecessor's figures.

    python benchmarks/compile_bench.py               # 1 .. 10,000 jobs, tmpfs and disk, arrays,
                                                     # two stages, startup, --check
    python benchmarks/compile_bench.py --large       # also 100,000 jobs
    python benchmarks/compile_bench.py --quick       # 1 .. 1,000 jobs only
    python benchmarks/compile_bench.py --markdown    # the README's table, from this run

Each compile runs `oellm compile` in a fresh process that writes a real bundle, so its wall
time includes starting Python and its peak memory is the compile's own. The process reports its
phases: compiling (in memory) and writing (timed apart). "tmpfs" writes under /dev/shm, "disk"
under the system's temporary folder; writing is durable either way (one sync of the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

# What `oellm compile EXP -o OUT` does, with its phases timed in-process.
CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    start = time.perf_counter()
    from pathlib import Path
    from oellm.compiler.pipeline import CompileRequest, compile_bundle
    from oellm.compiler.write import write_bundle
    imported = time.perf_counter()
    bundle = compile_bundle(CompileRequest(experiment=Path(sys.argv[1])))
    compiled = time.perf_counter()
    write_bundle(bundle, Path(sys.argv[2]))
    end = time.perf_counter()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"jobs": len(bundle.lock["jobs"]), "import": imported - start,
                      "compile": compiled - imported, "write": end - compiled,
                      "peak_mib": peak_mib}))
    """
)

# The predecessor's figures, as its own benchmark reported them (issue 15): compiling 1, 100,
# 1,000 and 10,000 jobs, its peak memory at 10,000, and its cost per job.
PREDECESSOR = {1: "0.69 s", 100: "2.18 s", 1_000: "11.9 s", 10_000: "147 s, 216 MB"}
PREDECESSOR_PER_JOB = "~13 ms"


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
    wall: float  # the whole process, Python's start included
    compile: float
    write: float
    peak_mib: float

    @property
    def per_job_ms(self) -> float:
        return self.compile / self.jobs * 1000


def compile_case(case: str, text: str, where: Path, label: str) -> Row:
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        exp = Path(tmp) / "exp.yaml"
        exp.write_text(text)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(exp), str(Path(tmp) / "bundle")],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    r = json.loads(out.stdout)
    return Row(case, label, r["jobs"], wall, r["compile"], r["write"], r["peak_mib"])


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


def check_unchanged(n: int, m: int, where: Path) -> tuple[float, int]:
    """`oellm compile --check` of an unchanged bundle: wall time and exit code."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        exp = Path(tmp) / "exp.yaml"
        exp.write_text(grid(n, m))
        bundle = Path(tmp) / "bundle"
        command = [sys.executable, "-m", "oellm", "compile", str(exp), "-o", str(bundle)]
        subprocess.run(command, check=True, capture_output=True)
        start = time.perf_counter()
        done = subprocess.run([*command, "--check"], capture_output=True)
        return time.perf_counter() - start, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 .. 1,000 jobs only")
    parser.add_argument("--large", action="store_true", help="also 100,000 jobs")
    parser.add_argument("--markdown", action="store_true", help="print the README's table")
    args = parser.parse_args()
    tmpfs = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    disk = Path(os.environ.get("OELLM_BENCH_DISK", tempfile.gettempdir()))
    sizes = [(1, 1), (10, 10), (10, 100)]
    if not args.quick:
        sizes.append((100, 100))
    if args.large:
        sizes.append((100, 1000))
    rows: list[Row] = []
    for n, m in sizes:
        for label, where in (("tmpfs", tmpfs), ("disk", disk)):
            if n * m > 10_000 and label == "disk":
                continue  # 100,000 files on a shared disk measure the disk, not oellm
            rows.append(compile_case(f"grid {n} x {m}", grid(n, m), where, label))
            _progress(rows[-1])
    extra = [("arrays 10 x 100", grid(10, 100, array=True))]
    if not args.quick:
        extra += [
            ("arrays 100 x 100", grid(100, 100, array=True)),
            ("two stages 2 x 1,000", two_stage(1000)),
        ]
    for case, text in extra:
        rows.append(compile_case(case, text, tmpfs, "tmpfs"))
        _progress(rows[-1])
    started = startup()
    check_size = (10, 100) if args.quick else (100, 100)
    check_wall, check_code = check_unchanged(*check_size, tmpfs)
    checked = check_size[0] * check_size[1]
    print(file=sys.stderr)
    print(
        f"startup (oellm --version): {started:.3f} s; compile --check of an unchanged "
        f"{checked:,}-job bundle: {check_wall:.2f} s (exit {check_code})",
        file=sys.stderr,
    )
    if args.markdown:
        print(markdown(rows, started, checked, check_wall))
    return 0


def _progress(row: Row) -> None:
    print(
        f"{row.case:<22} {row.where:<5} {row.jobs:>7} jobs  wall {row.wall:7.2f} s  "
        f"compile {row.compile:7.2f} s  write {row.write:6.2f} s  "
        f"{row.per_job_ms:6.3f} ms/job  peak {row.peak_mib:5.0f} MiB",
        file=sys.stderr,
    )


def markdown(rows: list[Row], started: float, checked: int, check_wall: float) -> str:
    lines = [
        "| case | jobs | written to | wall (process) | compile | write | per job | peak memory "
        "| predecessor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        before = PREDECESSOR.get(row.jobs, "") if row.case.startswith("grid") else ""
        lines.append(
            f"| {row.case} | {row.jobs:,} | {row.where} | {row.wall:.2f} s | {row.compile:.2f} s "
            f"| {row.write:.2f} s | {row.per_job_ms:.3f} ms | {row.peak_mib:.0f} MiB | {before} |"
        )
    lines.append(
        f"| startup: `oellm --version` | | | {started:.2f} s | | | | | |"
        f"\n| `compile --check`, unchanged bundle | {checked:,} | tmpfs | {check_wall:.2f} s "
        f"| | | | | |"
        f"\n| in-process cost per job (predecessor) | | | | | | {PREDECESSOR_PER_JOB} | | |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
