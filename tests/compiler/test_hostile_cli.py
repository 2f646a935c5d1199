"""The worst inputs we know, through `oellm compile` as a user runs it: each ends in exit 2 with
one positioned message, within 1 GB of address space. How long each takes against the budget of
10 seconds is measured by `benchmarks/hostile_bench.py`, not asserted here (a test must not
depend on how loaded the machine is); the timeout below only catches a hang."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BUDGET_SECONDS = 10  # the budget per input, reported by benchmarks/hostile_bench.py
BUDGET_BYTES = 1 << 30
BASE = "project: {name: 'fz_${index}'}\nbackend: {bash: {command: 'true'}}\n"


def _laughs() -> bytes:
    text = "vars:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"  {name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
    return (BASE + text).encode()


def _string_bomb() -> bytes:
    text = "vars:\n  a: xxxxxxxxxx\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"  {name}: " + f"${{.{prev}}}" * 10 + "\n"
    return (BASE + text).encode()


def _chain() -> bytes:
    links = "".join(f"  a{i}: ${{.a{i + 1}}}\n" for i in range(3000))
    return (BASE.replace("'true'", "'${vars.a0}'") + "vars:\n" + links + "  a3000: 1\n").encode()


def _deep_block() -> bytes:
    keys = "".join("  " * (d + 1) + f"k{d}:\n" for d in range(300))
    return (BASE + "vars:\n" + keys + "  " * 301 + "x: 1\n").encode()


def _sweep(values: int, keys: str, extra: str = "") -> bytes:
    listed = ", ".join(map(str, range(values)))
    params = "".join(f"    vars.{k}: [{listed}]\n" for k in keys)
    return (BASE + extra + "sweep:\n  params:\n" + params).encode()


CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "latin1": (lambda: ("# café\n" + BASE).encode("latin-1"), "1:6: byte 5 (0xe9)"),
    "utf16": (lambda: BASE.encode("utf-16"), "1:1: byte 0: the file is UTF-16"),
    "utf16_no_bom": (lambda: BASE.encode("utf-16-le"), "1:2: byte 1 is a NUL byte"),
    "surrogate": (lambda: (BASE + 'vars: {x: "\\ud800"}\n').encode(), "3:8: the text holds"),
    "omap": (lambda: (BASE + "vars: !!omap [{a: 1}]\n").encode(), "3:7: the YAML tag '!!omap'"),
    "python_object": (
        lambda: (BASE + "vars: !!python/object/apply:os.system [id]\n").encode(),
        "3:7: the YAML tag '!!python/object/apply:os.system'",
    ),
    "deep_block": (_deep_block, "nested more than 100 deep"),
    "deep_flow": (lambda: (BASE + "vars: " + "[" * 1000 + "]" * 1000 + "\n").encode(), "deep"),
    "chain": (_chain, "2:18: backend.bash.command: interpolations refer through more than 100"),
    "big_int": (lambda: (BASE + "vars: {x: " + "9" * 5000 + "}\n").encode(), "3:11: the integer"),
    "billion_laughs": (_laughs, "9:6: aliases expand this file to more than 200,000 values"),
    "string_bomb": (_string_bomb, "10:3: vars.g: interpolations make this value larger"),
    "sweep_100_4": (lambda: _sweep(100, "abcd"), "3:1: sweep: the sweep has 100,000,000 points"),
    "sweep_1000_2": (
        lambda: _sweep(1000, "ab", "slurm: {limits: {max_jobs: 100}}\n"),
        "4:1: sweep: the sweep has 1,000,000 points (1000 vars.a x 1000 vars.b)",
    ),
}


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (BUDGET_BYTES, BUDGET_BYTES))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_refused_within_budget(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    path = tmp_path / "exp.yaml"
    path.write_bytes(make())
    done = subprocess.run(
        [sys.executable, "-m", "oellm", "compile", "exp.yaml", "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("exp.yaml:"), done.stderr
    assert expected in first, done.stderr
    assert not (tmp_path / "out").exists()
