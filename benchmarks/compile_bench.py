"""Compile benchmark: wall time and peak memory of `oellm compile` for generated sweeps.

    python benchmarks/compile_bench.py            # 100, 1,000, 10,000 jobs (also as arrays);
                                                  # 2 x 1,000 staged
    python benchmarks/compile_bench.py --quick    # 100 and 1,000 only

Each case runs in a fresh process (so peak memory is the compile's own) and writes a real bundle.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from oellm.compiler.pipeline import CompileRequest, compile_bundle
    from oellm.compiler.write import write_bundle
    start = time.perf_counter()
    bundle = compile_bundle(CompileRequest(experiment=Path(sys.argv[1])))
    compiled = time.perf_counter()
    write_bundle(bundle, Path(sys.argv[2]))
    end = time.perf_counter()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"jobs": len(bundle.lock["jobs"]), "compile": compiled - start,
                      "write": end - compiled, "peak_mib": peak_mib}))
    """
)


def grid(n: int, m: int, array: bool = False) -> str:
    """n x m jobs; with `array`, submitted as SLURM job arrays (`slurm.array: true`)."""
    a = ", ".join(str(i) for i in range(n))
    b = ", ".join(str(i) for i in range(m))
    return textwrap.dedent(
        f"""
        project: {{name: bench}}
        job: {{name: "bench_${{vars.a}}_${{vars.b}}"}}
        backend: {{bash: {{command: "echo ${{vars.a}} ${{vars.b}}"}}}}
        vars: {{a: 0, b: 0}}
        slurm: {{array: {"true" if array else "false"}}}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-job cases")
    args = parser.parse_args()
    cases = [
        ("grid 10 x 10", grid(10, 10)),
        ("grid 10 x 100", grid(10, 100)),
        ("arrays 10 x 100", grid(10, 100, array=True)),
    ]
    if not args.quick:
        cases += [
            ("grid 100 x 100", grid(100, 100)),
            ("arrays 100 x 100", grid(100, 100, array=True)),
            ("two stages 2 x 1,000", two_stage(1000)),
        ]
    print(f"{'case':<24} {'jobs':>7} {'compile s':>10} {'write s':>8} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in cases:
            exp = Path(tmp) / "exp.yaml"
            exp.write_text(text)
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(exp), str(Path(tmp) / "bundle")],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(out.stdout)
            print(
                f"{name:<24} {r['jobs']:>7} {r['compile']:>10.2f} {r['write']:>8.2f} "
                f"{r['peak_mib']:>9.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
