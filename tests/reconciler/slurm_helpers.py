"""Shared by the reconciler's real-SLURM tests: compile a bundle into tmp_path, run `oellm` as
a separate process (as cron would), and read status and ledgers back as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.write import write_bundle
from oellm.reconciler import tags
from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.session import project_key
from tests.helpers import write


def compile_to(
    tmp_path: Path, text: str, moved: dict[str, str] | None = None, name: str = "bundle"
) -> Path:
    exp = write(tmp_path / "exp.yaml", text)
    env = {"OUTPUT_DIR": str(tmp_path / "out")}
    bundle = compile_bundle(CompileRequest(experiment=exp, env=env, moved=moved or {}))
    write_bundle(bundle, tmp_path / name)
    return tmp_path / name


def oellm(
    *args: str, env: dict[str, str] | None = None, timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    # A short intent grace, so the tests that kill a round see lost intents within seconds.
    full = {**os.environ, "OELLM_INTENT_GRACE_SECONDS": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "oellm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
    )


def status_rows(bundle: Path) -> dict[str, dict[str, Any]]:
    run = oellm("status", str(bundle), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["schema_version"] == 1
    return {row["job"]: row for row in data["bundles"][0]["jobs"]}


def ledger(bundle: Path, job: str) -> list[dict[str, Any]]:
    run = oellm("status", str(bundle), job, "--json")
    assert run.returncode == 0, run.stderr
    attempts: list[dict[str, Any]] = json.loads(run.stdout)["attempts"]
    return attempts


def tag_prefix(bundle: Path) -> str:
    return tags.prefix(project_key(load_bundle(bundle)))


def cancel_prefix(prefix: str) -> None:
    """Cancel every job of ours whose tag starts with `prefix` (held jobs stay queued
    otherwise, and later tests and benchmarks would see them). By id: `scancel --name`
    takes one name, not a list."""
    listed = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%i|%j"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ids = [
        job_id
        for job_id, _, name in (line.partition("|") for line in listed.stdout.splitlines())
        if tags.tag_of(name).startswith(prefix)
    ]
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=60)


def queued_names(prefix: str) -> list[str]:
    """The tags of our queued jobs whose tag starts with `prefix`. Held jobs stay PENDING in
    squeue until cancelled, so squeue sees every submission (sacct learns of held jobs late
    and, across a controller restart, not at all)."""
    result = subprocess.run(
        ["squeue", "--me", "-t", "all", "--noheader", "--format=%j"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    found = (tags.tag_of(name) for name in result.stdout.split())
    return [tag for tag in found if tag.startswith(prefix)]
