"""Soak test of `oellm reconcile` on the real local SLURM: "never twice, never lost" under abuse.

    python benchmarks/soak.py --short                # CI size: ~28 rounds, 18 jobs, minutes
    python benchmarks/soak.py --rounds 150 --jobs 40 --seed 7 --json soak.json

It compiles a bundle of short bash jobs: two stages (stable -> decay, by sibling reference), a
chained stage (`job.chain_repeat: 2`), an array stage (`slurm.array: true`) and jobs that fail
once, then succeed (`job.restart: {on: [FAILED], max_attempts: 3}`). Then it runs rounds of
`oellm reconcile`, each a separate process as cron would start it, each picked at random from
--seed: a plain round; one SIGKILLed at a random instant, or at a crash point (OELLM_CRASH_AT);
3-8 rounds released together from a barrier, sometimes over a stale lock (a dead pid) or an
empty lock file, sometimes with a stalled lock write (OELLM_LOCK_STALL_SECONDS=1), sometimes
with one of them killed. Between rounds it deletes a random record, or the whole state dir,
recompiles with one job's command changed (sometimes while a round runs), and once moves the
output dir (`oellm compile --move-state`). Finally it runs plain rounds until every job has
settled and counts from sacct and squeue, by tag: duplicates (a tag, or a job's attempt and
link, that is more than one SLURM job), submissions of one job live at once, jobs lost (not
settled, or never submitted), and every `oellm` exit status (3, or a traceback, is a bug).

Exit 0 only when all of those are zero. It cancels everything it queued before it exits, and
prints a summary table and one `SOAK-RESULT {json}` line; --json writes the same summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak_audit  # sibling modules: benchmarks/ is not a package
from soak_experiment import Experiment, Point
from soak_report import SETTLED, Tally, print_table, summary
from soak_runs import Proc, Runs
from soak_state import State

from oellm.reconciler.submit import CRASH_POINTS


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = work
        self.bundle = work / "bundle"
        self.out = work / "out"
        self.experiment = Experiment.make(
            args.jobs, self.rng, secrets.token_hex(2), work / "markers"
        )
        self.exp_file = work / "experiment.yaml"
        self.tally = Tally()
        env = {**os.environ, "OELLM_INTENT_GRACE_SECONDS": str(args.grace)}
        self.runs = Runs(work, env, self.tally)
        self.state = State(self.bundle, self.rng, self.tally)
        self.timeline: list[tuple[int, datetime, datetime, str]] = []
        self.since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
        # Every round's mode up front, so that each job is released (its start condition met)
        # right before a round that abuses: a killed round has a submission to be killed in.
        modes, weights = ["plain", "kill", "crash", "together"], [30, 22, 18, 30]
        self.modes = [self.rng.choices(modes, weights)[0] for _ in range(args.rounds)]
        until = max(1, args.rounds * 85 // 100)
        rough = [n for n in range(1, until + 1) if self.modes[n - 1] != "plain"] or [1]
        self.release_plan = sorted(
            ((self.rng.choice(rough), point) for point in self.experiment.points),
            key=lambda pair: pair[0],
        )
        self.just_released: list[Point] = []
        middle = self.rng.randint(args.rounds * 2 // 5, args.rounds * 3 // 5)
        self.move_at: int = middle if args.move_at is None else args.move_at

    def compile(self, number: int, move: bool = False) -> tuple[int, str, str]:
        self.exp_file.write_text(json.dumps(self.experiment.config(), indent=1) + "\n")
        argv = self.runs.argv("compile", str(self.exp_file), "-o", str(self.bundle))
        proc = self.runs.spawn(
            argv + (["--move-state"] if move else []),
            "compile --move-state" if move else "compile",
            number,
            {"OUTPUT_DIR": str(self.out)},
        )
        return self.runs.finish(proc)

    def reconcile(self, number: int, what: str = "reconcile", **extra: str) -> Proc:
        return self.runs.spawn(self.runs.argv("reconcile", str(self.bundle)), what, number, extra)

    # -- abuse

    def release(self, number: int, everything: bool = False) -> str:
        """Let the jobs planned for this round start (all that are left, with `everything`)."""
        points = [p for n, p in self.release_plan if n == number or (everything and n >= number)]
        for point in points:
            self.experiment.release(point)
        self.just_released = points
        names = [name for point in points for name in self.experiment.jobs_of(point)]
        return f"released {', '.join(names)}" if names else ""

    def recompile(self, number: int, during: Proc | None = None) -> str:
        change = self.experiment.change_one(self.rng)
        if during is not None:
            time.sleep(self.rng.uniform(0, 1.0))
            self.tally.recompiles_mid_round += 1
        code, _, err = self.compile(number)
        self.tally.recompiles += 1
        when = " while a round ran" if during is not None else ""
        return f"recompiled{when}: {change} (exit {code}{': ' + err.strip() if code else ''})"

    def move(self, number: int) -> str:
        old = self.state.state_dir()
        self.out = self.work / "out-moved"
        code, out, err = self.compile(number, move=True)
        self.tally.moves += 1
        said = out + err
        if code != 0:
            self.tally.move_failures.append(f"round {number}: exit {code}: {said.strip()}")
        elif "moved the state" not in said:
            self.tally.move_failures.append(f"round {number}: no 'moved the state': {said!r}")
        told = "said 'moved the state'" if "moved the state" in said else said.strip()
        return f"output dir moved, state {old} -> {self.state.state_dir()} (exit {code}, {told})"

    # -- rounds

    def plain(self, number: int) -> list[str]:
        self.runs.finish(self.reconcile(number))
        return ["plain round"]

    def killed(self, number: int) -> list[str]:
        proc = self.reconcile(number, "reconcile killed")
        delay = self.rng.uniform(0, 2.0)
        time.sleep(delay)
        self.runs.kill(proc)
        self.runs.finish(proc)
        return [f"SIGKILL after {delay:.2f} s" + ("" if proc.killed else " (it had ended)")]

    def crash(self, number: int) -> list[str]:
        # The two chain points are only reached while a chain is being queued.
        chain = any(p.kind == "chain" for p in self.just_released)
        point = self.rng.choice(CRASH_POINTS if chain else CRASH_POINTS[:4])
        self.tally.crash_rounds += 1
        code, _, _ = self.runs.finish(
            self.reconcile(number, f"reconcile crash {point}", OELLM_CRASH_AT=point),
            expect_kill=True,
        )
        if code == -signal.SIGKILL:
            self.tally.crashes += 1
        return [f"crash point {point}" + (" (reached)" if code == -signal.SIGKILL else "")]

    def together(self, number: int) -> list[str]:
        count = self.rng.randint(3, 8)
        extra: dict[str, str] = {}
        notes = [f"{count} rounds released together"]
        if self.rng.random() < 0.4:
            extra["OELLM_LOCK_STALL_SECONDS"] = "1"
            self.tally.stalled_rounds += 1
            notes.append("lock writes stalled 1 s")
        procs, flags = self.runs.start_together(
            count, ["reconcile", str(self.bundle)], "reconcile together", number, extra
        )
        self.tally.concurrent_rounds += 1
        self.tally.concurrent_processes += count
        if self.rng.random() < 0.3:
            delay = self.rng.uniform(0, 1.5)
            time.sleep(delay)
            victim = self.rng.randrange(count)
            self.runs.kill(procs[victim])
            notes.append(f"one killed after {delay:.2f} s")
        codes = [self.runs.finish(p)[0] for p in procs]
        notes.append(f"exits {sorted(codes)}")
        for flag in flags:
            flag.unlink(missing_ok=True)
        return notes

    def one_round(self, number: int) -> None:
        rng = self.rng
        begun = datetime.now()
        notes: list[str] = []
        # Once, and only with records to move (else it is postponed a round).
        if 0 < self.move_at <= number and not self.tally.moves and self.state.records():
            notes.append(self.move(number))
        if rng.random() < 0.12:
            notes.append(self.state.delete_record())
        if rng.random() < 0.04:
            notes.append(self.state.delete_state_dir())
        released = self.release(number)
        if released:
            notes.append(released)
        recompile = rng.random() < 0.10
        if recompile and rng.random() < 0.5:
            notes.append(self.recompile(number))
            recompile = False
        mode = self.modes[number - 1]
        if mode == "together" or rng.random() < 0.1:
            kind = rng.random()
            if kind < 0.3:
                notes.append(self.state.plant_lock(empty=False))
            elif kind < 0.45:
                notes.append(self.state.plant_lock(empty=True))
        if recompile:
            # A round in flight while the bundle is replaced under it.
            proc = self.reconcile(number)
            notes.append(self.recompile(number, during=proc))
            self.runs.finish(proc)
        notes += getattr(self, {"kill": "killed"}.get(mode, mode))(number)
        self.state.note_identity()
        self.tally.rounds += 1
        self.timeline.append((number, begun, datetime.now(), "; ".join(notes)))
        if self.args.verbose:
            print(f"round {number}: {'; '.join(notes)}", flush=True)

    def status(self) -> list[dict[str, Any]]:
        code, out, _ = self.runs.run(
            self.runs.argv("status", str(self.bundle), "--json"), "status", -1
        )
        if code != 0:
            return []
        # status --json, schema_version 1: one section per bundle (schemas/status.schema.json).
        rows: list[dict[str, Any]] = json.loads(out)["bundles"][0]["jobs"]
        return rows

    def settle(self) -> tuple[list[dict[str, Any]], float]:
        """Plain rounds, as cron would run them, until every job has settled (or time is up)."""
        began = time.monotonic()
        rows: list[dict[str, Any]] = []
        number = self.args.rounds
        self.release(number, everything=True)
        while time.monotonic() - began < self.args.settle:
            number += 1
            self.runs.finish(self.reconcile(number, "reconcile settle"))
            self.tally.settle_rounds += 1
            rows = self.status()
            if rows and all(row["state"] in SETTLED for row in rows):
                # What status saw ending is recorded by one more round.
                self.runs.finish(self.reconcile(number + 1, "reconcile settle"))
                rows = self.status()
                break
            time.sleep(1)
        self.state.note_identity()
        return rows, time.monotonic() - began

    # -- the count

    def count(self) -> tuple[soak_audit.Audit, set[str], set[str]]:
        """The audit, once accounting shows every job id the records name (it lags a little,
        and names a job that just ended `allocation` for a few seconds)."""
        recorded = self.state.recorded_ids()
        end = time.monotonic() + 45
        while True:
            rows = soak_audit.read_slurm(self.since)
            found = soak_audit.audit(
                rows,
                self.experiment.names(),
                self.state.members(),
                self.state.chains(),
                datetime.now(),
            )
            seen = {sub.row.job_id for sub in found.submissions}
            missing = recorded - seen
            if not missing or time.monotonic() > end:
                return found, missing, seen - recorded
            time.sleep(2)

    def cancel_all(self) -> int:
        """scancel every job of ours still queued (by array job id for arrays)."""
        rows = soak_audit.parse_squeue(
            subprocess.run(
                ["squeue", "--me", "-h", "-o", "%i|%j|%T|%V"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env={**os.environ, "SLURM_BITSTR_LEN": "0"},
            ).stdout
        )
        subs, _ = soak_audit.classify(rows, self.experiment.names(), self.state.members())
        ids = sorted({sub.base for sub in subs})
        if ids:
            subprocess.run(["scancel", *ids], check=False, timeout=120)
        return len(ids)

    def rounds_at(self, when: datetime | None) -> str:
        """The rounds running when SLURM took a submission: the scenario behind a problem."""
        if when is None:
            return "?"
        hits = [
            f"round {n} ({what})"
            for n, begun, ended, what in self.timeline
            if begun.timestamp() - 1 <= when.timestamp() <= ended.timestamp() + 1
        ]
        return "; ".join(hits) or "a settle round"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Needs the local SLURM cluster (bash tests/slurm/cluster.sh up).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, help="jobs in the bundle (default 40; --short: 18)")
    parser.add_argument("--rounds", type=int, help="abuse rounds (default 150; --short: 28)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--short", action="store_true",
        help="the CI size: 28 rounds of 18 jobs, settle bound 150 s (a few minutes in all)",
    )  # fmt: skip
    parser.add_argument(
        "--settle", type=float,
        help="seconds of plain rounds at most, after the abuse, for every job to settle "
        "(default 300; --short: 150)",
    )  # fmt: skip
    parser.add_argument(
        "--move-at", type=int, default=None,
        help="the round before which the output dir moves (default: one in the middle; 0: never)",
    )  # fmt: skip
    parser.add_argument(
        "--grace", type=float, default=3,
        help="OELLM_INTENT_GRACE_SECONDS for every round (default 3, as the tests use)",
    )  # fmt: skip
    parser.add_argument(
        "--workdir", type=Path, help="where the bundle and outputs go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir when all is well")
    parser.add_argument("--json", type=Path, help="write the summary here as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each round")
    args = parser.parse_args(argv)
    short = {"jobs": 18, "rounds": 28, "settle": 150.0}
    full = {"jobs": 40, "rounds": 150, "settle": 300.0}
    for name, value in (short if args.short else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if shutil.which("sbatch") is None:
        print(
            "sbatch not found: start the cluster with bash tests/slurm/cluster.sh up",
            file=sys.stderr,
        )
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="oellm-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    soak = Soak(args, work)
    print(f"soak: seed {args.seed}, {args.rounds} rounds, {len(soak.experiment.names())} jobs, "
          f"move before round {soak.move_at or 'never'}, work dir {work}", flush=True)  # fmt: skip
    result: dict[str, Any] = {}
    try:
        code, _, err = soak.compile(0)
        if code != 0:
            print(f"the first compile failed (exit {code}): {err}", file=sys.stderr)
            return 2
        for number in range(1, args.rounds + 1):
            soak.one_round(number)
        rows, settle_seconds = soak.settle()
        found, missing, untracked = soak.count()
        result = summary(
            soak.tally,
            soak.experiment.names(),
            found,
            rows,
            soak.rounds_at,
            {
                "seed": args.seed,
                "identity_keys": sorted(soak.state.identity_keys),
                "untracked": len(untracked),
                "missing_in_slurm": len(missing),
                "settle_seconds": round(settle_seconds, 1),
                "wall_seconds": round(time.monotonic() - began, 1),
                "work_dir": str(work),
            },
        )
    finally:
        cancelled = soak.cancel_all()
        soak.runs.log.close()
    result["cancelled_at_end"] = cancelled
    print_table(result)
    bad = sum(
        result[k] for k in ("duplicates", "live_at_once", "lost", "exit3", "hung", "move_failures")
    )
    result["ok"] = bad == 0
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("SOAK-RESULT " + json.dumps({k: v for k, v in result.items() if k != "details"}))
    if result["ok"] and not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
