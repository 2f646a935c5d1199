"""`oellm check BUNDLE`: sbatch's verdict per distinct script shape (on the real local SLURM),
the paths the jobs read, and the node-hours and GPU-hours the sweep asks for."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oellm import check_cli
from oellm.cli import main
from oellm.resources import Ask, ask, directives, minutes
from tests.helpers import EXAMPLES, write


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _compile(tmp_path: Path, exp: Path, *extra: str, env: dict[str, str] | None = None) -> Path:
    bundle = tmp_path / "bundle"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        assert main(["compile", str(exp), "-o", str(bundle), *extra]) == 0
    return bundle


PARTITIONS = """
project: {name: chk}
backend: {bash: {command: "true"}}
job: {name: "chk_${vars.x}_${vars.part}"}
vars: {x: 0, part: debug}
slurm:
  sbatch: {partition: "${vars.part}", time: "00:01:00"}
sweep:
  params:
    vars.part: [debug, no_such_partition_zz]
    vars.x: [1, 2, 3]
"""


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_sbatch_refusal_is_reported_once_per_shape_and_nothing_is_queued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _compile(tmp_path, write(tmp_path / "exp.yaml", PARTITIONS))
    capsys.readouterr()
    asked: list[list[str]] = []
    real = check_cli.run

    def counting(argv: list[str], **kwargs: Any) -> Any:
        asked.append(list(argv))
        return real(argv, **kwargs)

    monkeypatch.setattr(check_cli, "run", counting)
    code, out, err = run(["check", str(bundle)], capsys)
    assert err == ""
    assert code == 1
    # Six jobs, two shapes: sbatch is asked twice, with --test-only.
    assert len(asked) == 2 and all(a[:2] == ["sbatch", "--test-only"] for a in asked)
    assert "sbatch refuses jobs/chk_1_no_such_partition_zz.sbatch (3 jobs: " in out
    assert "chk_2_no_such_partition_zz, chk_3_no_such_partition_zz" in out
    assert "invalid partition" in out.lower()
    assert "1 of 2 distinct script shapes accepted" in out
    # --test-only queues nothing: no job of this bundle is known to SLURM.
    names = ",".join(f"chk_{x}_{p}" for x in (1, 2, 3) for p in ("debug", "no_such_partition_zz"))
    queue = subprocess.run(
        ["squeue", "--noheader", "--name", names, "--format=%i"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert queue.stdout.strip() == ""


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_good_bundle_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _compile(tmp_path, EXAMPLES / "demo.yaml")
    capsys.readouterr()
    code, out, _ = run(["check", str(bundle)], capsys)
    assert code == 0, out
    assert "sbatch: 1 of 1 distinct script shape accepted" in out


def _megatron_bundle(tmp_path: Path) -> Path:
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "TOKENIZER": str(tmp_path / "tok"),
        "CONTAINER_CACHE_DIR": str(tmp_path / "images"),
        "OUTPUT_DIR": str(tmp_path / "out"),
    }
    return _compile(tmp_path, EXAMPLES / "clusters" / "snellius.yaml", env=env)


def test_missing_reads_are_named_with_their_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _megatron_bundle(tmp_path)
    lock = json.loads((bundle / "plan.lock.json").read_text())
    decay = next(j for j in lock["jobs"] if j["stage"] == "decay")
    # The decay stage loads its stable sibling's checkpoint: written by the bundle, not read.
    assert not any("checkpoints" in r for r in decay["reads"])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fineweb_text_document.bin").write_bytes(b"")
    (tmp_path / "tok").mkdir()
    capsys.readouterr()
    code, out, _ = run(["check", str(bundle), "--skip-sbatch"], capsys)
    assert code == 1
    missing = [line for line in out.splitlines() if line.startswith("missing: ")]
    assert missing == [
        f"missing: {tmp_path}/data/fineweb_text_document.idx (read by 4 jobs: "
        + ", ".join(j["name"] for j in lock["jobs"])
        + ")",
        f"missing: {tmp_path}/images/oellm-megatron-cuda.sif (read by 4 jobs: "
        + ", ".join(j["name"] for j in lock["jobs"])
        + ")",
    ]
    (tmp_path / "data" / "fineweb_text_document.idx").write_bytes(b"")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "oellm-megatron-cuda.sif").write_bytes(b"")
    code, out, _ = run(["check", str(bundle), "--skip-sbatch"], capsys)
    assert code == 0, out
    assert "paths: all present (16 reads)" in out


def test_relative_reads_are_relative_to_the_folder_holding_the_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _compile(tmp_path, EXAMPLES / "clusters" / "snellius.yaml")
    lock = json.loads((bundle / "plan.lock.json").read_text())
    assert "./tokenizer" in lock["jobs"][0]["reads"]
    capsys.readouterr()
    _, out, _ = run(["check", str(bundle), "--skip-sbatch"], capsys)
    assert "missing: ./tokenizer" in out
    (tmp_path / "tokenizer").mkdir()
    _, out, _ = run(["check", str(bundle), "--skip-sbatch"], capsys)
    assert "missing: ./tokenizer" not in out


RESOURCES = """
project: {name: res}
backend: {bash: {command: "true"}}
job: {name: "res_${vars.x}", chain_repeat: 3}
vars: {x: 0}
slurm:
  sbatch: {nodes: 2, time: "01:30:00", gpus_per_node: 4}
sweep:
  params: {vars.x: [1, 2]}
"""


def test_node_and_gpu_hours_in_check_and_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", RESOURCES)
    bundle = _compile(tmp_path, exp)
    capsys.readouterr()
    # 2 jobs x 2 nodes x 1.5 h x 3 links = 18 node-hours; x 4 GPUs per node = 72 GPU-hours.
    expected = "resources: 18.0 node-hours, 72.0 GPU-hours at most (2 jobs"
    code, out, _ = run(["check", str(bundle), "--skip-sbatch"], capsys)
    assert code == 0 and expected in out
    code, out, _ = run(["plan", str(bundle)], capsys)
    assert code == 0 and out.splitlines()[-1].startswith(expected)
    code, out, _ = run(["plan", str(exp)], capsys)
    assert code == 0 and out.splitlines()[-1].startswith(expected)


def test_not_a_bundle_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", str(tmp_path)], capsys)
    assert code == 2 and "not a bundle" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", 30.0),
        ("30:30", 30.5),
        ("01:30:00", 90.0),
        ("2-0", 2880.0),
        ("1-2:30", 1590.0),
        ("1-00:00:30", 1440.5),
        ("infinite", None),
        ("UNLIMITED", None),
    ],
)
def test_slurm_time_formats(text: str, expected: float | None) -> None:
    assert minutes(text) == expected


def test_gpu_requests() -> None:
    def of(script: str) -> Ask:
        return ask(directives("#!/bin/bash\n" + script + "echo hi\n#SBATCH --nodes=99\n"))

    assert of("#SBATCH --nodes=2\n#SBATCH --gres=gpu:4\n#SBATCH --time=60\n") == Ask(2, 8, 60)
    assert of("#SBATCH -N 3\n#SBATCH --gpus-per-node=a100:2\n") == Ask(3, 6, None)
    assert of("#SBATCH --nodes=2-4\n#SBATCH --gpus=5\n#SBATCH -t 1:0:0\n") == Ask(2, 5, 60)
    # Directives after the first command are not read by sbatch.
    assert of("") == Ask(1, 0, None)
