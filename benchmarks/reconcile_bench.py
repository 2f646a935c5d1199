"""Reconcile benchmark on the real local SLURM: a bundle of N held jobs.

    python benchmarks/reconcile_bench.py --jobs 10000
    python benchmarks/reconcile_bench.py --jobs 10000 --array    # as SLURM job arrays

Compiles N jobs (`#SBATCH --hold`, so they stay pending), runs reconcile rounds until every
job is submitted (each round within its budgets: `--time-budget`, default 60 s, and
`--max-submit`), then times no-op rounds, counting every SLURM command through shims on
PATH. Needs the cluster (`bash tests/slurm/cluster.sh up`); cancels its jobs at the end.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oellm.reconciler import tags

TOOLS = ("sbatch", "squeue", "sacct", "scancel")


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


def reconcile(
    bundle: Path, env: dict[str, str], log: Path, budget: tuple[str, ...] = ()
) -> tuple[float, collections.Counter[str], int]:
    log.write_text("")
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "oellm", "reconcile", str(bundle), *budget],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if run.returncode not in (0, 1):
        sys.exit(f"reconcile failed ({run.returncode}): {run.stderr}")
    return seconds, collections.Counter(log.read_text().split()), run.returncode


def cancel_own_jobs(prefix: str) -> None:
    """Every job whose tag (read from its job name) starts with `prefix`; an array as a whole
    (by its job id)."""
    listed = subprocess.run(
        ["squeue", "--me", "--noheader", "--format=%i|%j"], capture_output=True, text=True
    )
    ids = sorted(
        {
            job_id.split("_", 1)[0]
            for job_id, _, name in (line.partition("|") for line in listed.stdout.splitlines())
            if tags.tag_of(name).startswith(prefix)
        }
    )
    for start in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[start : start + 500]], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="no-op rounds to time")
    parser.add_argument(
        "--array", action="store_true", help="submit the jobs as SLURM job arrays (slurm.array)"
    )
    parser.add_argument("--time-budget", help="passed to oellm reconcile (default: its own)")
    parser.add_argument("--max-submit", help="passed to oellm reconcile (default: its own)")
    args = parser.parse_args()
    budget: tuple[str, ...] = ()
    if args.time_budget is not None:
        budget += ("--time-budget", args.time_budget)
    if args.max_submit is not None:
        budget += ("--max-submit", args.max_submit)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        values = ", ".join(str(i) for i in range(args.jobs))
        exp = tmp / "exp.yaml"
        exp.write_text(
            "project: {name: rbench}\n"
            'job: {name: "rb_${vars.i}"}\n'
            "vars: {i: 0}\n"
            'backend: {bash: {command: "sleep 1"}}\n'
            f"slurm: {{array: {'true' if args.array else 'false'}, sbatch: {{hold: true}}}}\n"
            f"sweep:\n  params: {{vars.i: [{values}]}}\n"
        )
        env0 = {**os.environ, "OUTPUT_DIR": str(tmp / "out")}
        subprocess.run(
            [sys.executable, "-m", "oellm", "compile", str(exp), "-o", str(tmp / "bundle")],
            env=env0,
            check=True,
            capture_output=True,
        )
        log = tmp / "calls.log"
        env = {**shims(tmp / "shims", log), "OUTPUT_DIR": str(tmp / "out")}
        from oellm.reconciler.bundle import load_bundle
        from oellm.reconciler.reconcile import project_key

        prefix = tags.prefix(project_key(load_bundle(tmp / "bundle")))
        try:
            # Submit rounds until one submits nothing (that one records first states).
            number, went = 0, 1
            while went:
                number += 1
                seconds, calls, _ = reconcile(tmp / "bundle", env, log, budget)
                went = calls["sbatch"]
                print(f"round {number}: {seconds:.1f} s; calls {dict(calls)}")
            for n in range(args.rounds):
                seconds, calls, code = reconcile(tmp / "bundle", env, log)
                print(f"no-op round {n + 1}: {seconds:.2f} s, exit {code}, calls {dict(calls)}")
        finally:
            cancel_own_jobs(prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
