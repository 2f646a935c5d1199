"""Chains (`job.chain_repeat`) on the real local SLURM: the links of one attempt are queued by
one reconcile round and run back to back without it; a `finish` event cancels the links still
queued; a run killed between two links resumes with the next one and submits none twice.

Links here end COMPLETED after a second (a link of a real run ends by TIMEOUT; SLURM treats
both alike under afterany), so each test takes seconds, not wall-time limits.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import pytest

from oellm.reconciler import tags
from tests.helpers import wait_for
from tests.reconciler.slurm_helpers import compile_to, ledger, oellm
from tests.reconciler.slurm_helpers import tag_prefix as prefix

pytestmark = pytest.mark.slurm

COUNTER = """
project: {{name: {name}}}
backend:
  bash:
    command: |
      echo "$SLURM_JOB_ID" >> "${{job.base_output_dir}}/runs"
      sleep 1
job:
  chain_repeat: 3
"""


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> None:
    return None


def slurm_jobs(tag_prefix: str) -> dict[str, tuple[str, str]]:
    """tag -> (job id, state) of every job with these tags (read from the job names), from
    squeue and sacct."""
    found: dict[str, tuple[str, str]] = {}
    queue = subprocess.run(
        ["squeue", "--me", "-t", "all", "--noheader", "--format=%i|%j|%T"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    acct = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", "now-1hour", "-E", "now", "--format=JobID,JobName,State"]
        + ["-s", "PD,R,CD,F,CA,TO,NF,PR,OOM,BF,DL,RQ,S"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    for line in [*acct.stdout.splitlines(), *queue.stdout.splitlines()]:
        job_id, name, state = line.split("|")[:3]
        if tags.tag_of(name).startswith(tag_prefix):
            found[tags.tag_of(name)] = (job_id, state.split(" ")[0])
    return found


def reconcile_until_settled(bundle: Path, job: str, seconds: float = 60) -> list[str]:
    """Rounds, as cron would run them, until the job's attempt is recorded as ended."""
    lines: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        run = oellm("reconcile", str(bundle))
        assert run.returncode in (0, 1), run.stdout + run.stderr
        lines += run.stdout.splitlines()
        if ledger(bundle, job)[-1]["phase"] == "finished":
            return lines
        time.sleep(1)
    raise AssertionError("\n".join(lines))


def test_one_round_queues_three_links_that_run_back_to_back(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, COUNTER.format(name="chain3"))
    first = oellm("reconcile", str(bundle))
    assert first.returncode == 1, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("submitted chain3 attempt 1 link 1/3 as job ")
    assert lines[1].startswith("queued chain3 attempt 1 link 2/3 as job ")
    assert lines[2].startswith("queued chain3 attempt 1 link 3/3 as job ")
    tag = prefix(bundle) + "chain3.1"
    names = [tag, f"{tag}.link2", f"{tag}.link3"]

    # No reconcile round now: SLURM alone runs the links, one after the other.
    def all_done() -> bool:
        jobs = slurm_jobs(prefix(bundle))
        return all(jobs.get(name, ("", ""))[1] == "COMPLETED" for name in names)

    wait_for("every link to end", all_done)
    jobs = slurm_jobs(prefix(bundle))
    assert sorted(jobs) == sorted(names)
    ids = [jobs[name][0] for name in names]
    out = tmp_path / "out" / "chain3"
    assert (out / "runs").read_text().split() == ids
    for before, after in itertools.pairwise(ids):
        ended = (out / ".oellm" / f"{before}.exit").stat().st_mtime
        started = (out / ".oellm" / f"{after}.started").stat().st_mtime
        assert started >= ended, "a link started before the one it waits for ended"

    # Later rounds record what the links did; nothing is submitted again.
    lines = reconcile_until_settled(bundle, "chain3")
    assert not [line for line in lines if "submitted" in line or "queued" in line]
    (attempt,) = ledger(bundle, "chain3")
    assert (attempt["final_state"], attempt["exit_code"]) == ("COMPLETED", 0)
    links = [(x["link"], x["job_id"], x["state"], x["after"]) for x in attempt["links"]]
    assert links == [
        (1, ids[0], "COMPLETED", None),
        (2, ids[1], "COMPLETED", ids[0]),
        (3, ids[2], "COMPLETED", ids[1]),
    ]
    assert (out / "current.log").resolve() == out / f"slurm-{ids[2]}.log"
    quiet = oellm("reconcile", str(bundle))
    assert (quiet.returncode, quiet.stdout) == (0, "")


def test_a_finish_event_on_link_2_cancels_link_3(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: chainfin}
        backend:
          bash:
            command: |
              echo "$SLURM_JOB_ID" >> "${job.base_output_dir}/runs"
              n=$(wc -l < "${job.base_output_dir}/runs")
              if [ "$n" -ge 2 ]; then echo "[after training is done]"; sleep 5; fi
        job:
          chain_repeat: 3
          log_events:
            - name: done
              kind: substring
              pattern: "[after training is done]"
              actions: [{kind: finish}]
        """,
    )
    run = oellm("reconcile", str(bundle), "--wait", "--interval", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    (attempt,) = ledger(bundle, "chainfin")
    assert attempt["final_state"] == "COMPLETED"
    assert attempt["finish_requested"].startswith("done: [after training is done]")
    assert [(e["event"], e["link"]) for e in attempt["events"]] == [("done", 2)]
    states = [(x["link"], x["state"]) for x in attempt["links"]]
    assert states == [(1, "COMPLETED"), (2, "COMPLETED"), (3, "CANCELLED")]
    link3 = attempt["links"][2]["job_id"]
    assert f"cancelled job {link3} (chainfin: finish event on link 2/3" in run.stdout
    # Link 3 never ran: it was cancelled while it waited for link 2.
    assert len((tmp_path / "out/chainfin/runs").read_text().split()) == 2
    assert not (tmp_path / f"out/chainfin/.oellm/{link3}.started").exists()


@pytest.mark.parametrize("point", ["between-links", "link-after-sbatch"])
def test_killed_between_links_resumes_and_submits_each_link_once(
    tmp_path: Path, point: str
) -> None:
    name = f"chaincrash_{point.replace('-', '_')}"
    bundle = compile_to(tmp_path, COUNTER.format(name=name))
    crashed = oellm("reconcile", str(bundle), env={"OELLM_CRASH_AT": point})
    assert crashed.returncode == -9
    assert "submitted" in crashed.stdout and "queued" not in crashed.stdout
    lines = reconcile_until_settled(bundle, name)
    if point == "link-after-sbatch":
        # Link 2 reached SLURM but not the record: found by its tag, not submitted again.
        assert any("found oellm." in line and ".link2 as job" in line for line in lines)
    (attempt,) = ledger(bundle, name)
    assert attempt["final_state"] == "COMPLETED"
    assert [(x["link"], x["state"]) for x in attempt["links"]] == [
        (1, "COMPLETED"),
        (2, "COMPLETED"),
        (3, "COMPLETED"),
    ]
    jobs = slurm_jobs(prefix(bundle))
    assert len(jobs) == 3, jobs
    runs = (tmp_path / "out" / name / "runs").read_text().split()
    assert sorted(runs) == sorted(job_id for job_id, _ in jobs.values())


def test_exclude_node_moves_the_queued_links_off_the_node(tmp_path: Path) -> None:
    """A log line names a bad node while link 1 runs: link 2, queued behind it, gets the node
    in its ExcNodeList at once (`scontrol update`), and later submissions get --exclude."""
    bundle = compile_to(
        tmp_path,
        """
        project: {name: exclude}
        backend:
          bash:
            command: |
              echo "bad node: $SLURMD_NODENAME"
              sleep 300
        job:
          chain_repeat: 2
          log_events:
            - name: bad_node
              kind: regex
              pattern: "bad node: (?P<node>\\\\S+)"
              match_once: true
              actions: [{kind: exclude_node, node: "{node}"}]
        """,
    )
    node = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()[0]
    try:
        first = oellm("reconcile", str(bundle))
        assert first.returncode in (0, 1), first.stdout + first.stderr
        log = tmp_path / "out" / "exclude" / "current.log"
        wait_for(
            "the bad node line in the log", lambda: log.exists() and "bad node" in log.read_text()
        )
        run = oellm("reconcile", str(bundle))
        assert run.returncode in (0, 1), run.stdout + run.stderr
        (attempt,) = ledger(bundle, "exclude")
        second = attempt["links"][1]["job_id"]
        assert f"queued job(s) {second} now avoid {node}" in run.stdout, run.stdout
        shown = subprocess.run(
            ["scontrol", "show", "job", second],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        assert f"ExcNodeList={node}" in shown, shown
        (event,) = attempt["events"]
        assert event["done"] == ["exclude_node"] and event["named"] == {"node": node}
    finally:
        oellm("cancel", str(bundle))
