"""How long the worst inputs we know take to be refused by `oellm compile`, against the budget
of 10 s and 1 GB per input (issue: no input a user can type ends in a hang, a crash or exit 3).

    python benchmarks/hostile_bench.py            # a table: case, exit, wall and CPU seconds
    python benchmarks/hostile_bench.py --repeat 3 # the slowest of three runs per case

The cases are the ones tests/compiler/test_hostile_cli.py asserts the messages of.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.compiler.test_hostile_cli import (
    BUDGET_BYTES,
    BUDGET_SECONDS,
    CASES,
    limit_memory,
)


def measure(case: str) -> tuple[int, float, float]:
    make, _ = CASES[case]
    with tempfile.TemporaryDirectory(prefix="oellm-hostile-") as tmp:
        (Path(tmp) / "exp.yaml").write_bytes(make())
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "oellm", "compile", "exp.yaml", "-o", "out"],
            cwd=tmp,
            capture_output=True,
            timeout=120,
            preexec_fn=limit_memory,
            check=False,
        )
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.returncode, wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (the slowest shown)")
    args = parser.parse_args()
    print(f"budget: {BUDGET_SECONDS} s and {BUDGET_BYTES >> 20} MiB of address space per input")
    print(f"{'case':<16} {'exit':>4} {'wall s':>7} {'cpu s':>6}")
    over = 0
    for case in sorted(CASES):
        runs = [measure(case) for _ in range(args.repeat)]
        code, wall, cpu = max(runs, key=lambda r: r[1])
        over += wall > BUDGET_SECONDS or code != 2
        print(f"{case:<16} {code:>4} {wall:>7.2f} {cpu:>6.2f}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
