"""Wall-time limits: `slurm.debug` clamps `--time` to 30 minutes or the debug partition's
maximum, and a `--time` above the chosen partition's or QoS's maximum is a compile error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oellm.compiler.time_limits import clock, seconds
from tests.compiler.test_presets import CLUSTERS, env_for, experiment, script_of
from tests.helpers import EXAMPLES, compile_file, rendered, write
from tests.helpers import compile_error as error_of


def time_of(script: str) -> str:
    (value,) = re.findall(r"^#SBATCH --time=(.*)$", script, flags=re.MULTILINE)
    return value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", 1800),
        (30, 1800),
        ("5:30", 330),
        ("12:00:00", 43200),
        ("48:00:00", 172800),
        ("2-00:00:00", 172800),
        ("1-12", 129600),
        ("1-12:30", 131400),
        ("UNLIMITED", None),
        ("soon", None),
        (None, None),
    ],
)
def test_slurm_time_forms(text: object, expected: int | None) -> None:
    assert seconds(text) == expected


def test_clock_keeps_hours_past_a_day() -> None:
    assert clock(172800) == "48:00:00" and clock(1800) == "00:30:00"


@pytest.mark.parametrize("name", CLUSTERS)
def test_debug_clamps_the_examples_twelve_hours(name: str) -> None:
    # The cluster examples ask for 12 hours; dev-g (LUMI) allows 3, a debug QoS 30 minutes.
    bundle = compile_file(
        EXAMPLES / "clusters" / f"{name}.yaml", ["slurm.debug=true"], env=env_for(name)
    )
    for job in bundle.lock_json["jobs"]:
        assert time_of(bundle.files[job["script"]].decode()) == "00:30:00"


def test_debug_clamps_to_a_shorter_debug_partition(tmp_path: Path) -> None:
    path = experiment(tmp_path, "bash")
    overrides = ["slurm=lumi", "slurm.debug=true", "slurm.limits.max_time.dev-g=00:20:00"]
    assert time_of(script_of(path, overrides, env_for("lumi"))) == "00:20:00"


def test_debug_keeps_a_shorter_request(tmp_path: Path) -> None:
    path = experiment(tmp_path, "bash")
    overrides = ["slurm=lumi", "slurm.debug=true", "slurm.sbatch.time=00:10:00"]
    assert time_of(script_of(path, overrides, env_for("lumi"))) == "00:10:00"


def test_time_above_the_partition_maximum_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "exp.yaml",
        """
        # @package _global_
        defaults:
          - /slurm: lumi
        project: {name: long}
        backend: {bash: {command: "true"}}
        slurm:
          sbatch:
            time: 3-00:00:00
        """,
    )
    text = rendered(error_of(path, env=env_for("lumi")))
    assert text.startswith(f"{path}:8:5: slurm.sbatch.time: time limit 3-00:00:00 is above")
    assert "partition standard-g maximum of 48:00:00" in text
    assert "hint:" in text and "chain_repeat" in text and "max_time.standard-g" in text


def test_a_listed_qos_decides(tmp_path: Path) -> None:
    path = experiment(tmp_path, "bash")
    env = {**env_for("marenostrum5"), "SLURM_QOS": "acc_debug"}
    text = rendered(error_of(path, ["slurm=marenostrum5"], env))
    assert "QoS acc_debug maximum of 02:00:00" in text
    # The production QoS allows the preset's 24 hours.
    assert time_of(script_of(path, ["slurm=marenostrum5"], env_for("marenostrum5")))


def test_an_unlisted_partition_is_not_checked(tmp_path: Path) -> None:
    path = experiment(tmp_path, "bash")
    env = {**env_for("lumi"), "SLURM_PARTITION": "elsewhere"}
    overrides = ["slurm=lumi", "slurm.sbatch.time=9-00:00:00"]
    assert time_of(script_of(path, overrides, env)) == "9-00:00:00"


@pytest.mark.parametrize("name", CLUSTERS)
def test_each_preset_lists_the_maximum_of_its_default_partition_or_qos(name: str) -> None:
    bundle = compile_file(EXAMPLES / "clusters" / f"{name}.yaml", env=env_for(name))
    script = bundle.files[bundle.lock_json["jobs"][0]["script"]].decode()
    partition = re.search(r"^#SBATCH --partition=(.*)$", script, flags=re.MULTILINE)
    qos = re.search(r"^#SBATCH --qos=(.*)$", script, flags=re.MULTILINE)
    preset = (EXAMPLES.parent / "slurm" / f"{name}.yaml").read_text(encoding="utf-8")
    listed = re.findall(r"^    ([\w-]+): ", preset, flags=re.MULTILINE)
    assert (partition and partition.group(1) in listed) or (qos and qos.group(1) in listed)
