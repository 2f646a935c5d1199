"""A container preset made for another machine than the slurm preset is refused unless the
config says the image runs anywhere (`container.machine: any`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compiler.test_presets import CLUSTERS, env_for, experiment, script_of
from tests.helpers import REPO, compile_error, rendered

PAIRS = [(s, c) for s in CLUSTERS for c in CLUSTERS if s != c]


@pytest.mark.parametrize(("slurm", "container"), PAIRS, ids=[f"{s}-{c}" for s, c in PAIRS])
def test_a_container_preset_of_another_machine_is_an_error(
    slurm: str, container: str, tmp_path: Path
) -> None:
    path = experiment(tmp_path, "megatron")
    text = rendered(
        compile_error(path, [f"slurm={slurm}", f"container={container}"], env_for(slurm))
    )
    assert text.startswith(f"<oellm>/config/container/{container}.yaml:")
    assert f"container.machine: the container preset is made for {container}, " in text
    assert f"the slurm preset for {slurm}" in text
    assert f"choose container={slurm}" in text and "container.machine: any" in text


def test_machine_any_allows_it_on_purpose(tmp_path: Path) -> None:
    path = experiment(tmp_path, "megatron")
    overrides = ["slurm=lumi", "container=leonardo", "container.machine=any"]
    assert "oellm-megatron-cuda.sif" in script_of(path, overrides, env_for("lumi"))


@pytest.mark.parametrize("generic", ["apptainer", "none"])
def test_generic_container_presets_run_anywhere(generic: str, tmp_path: Path) -> None:
    path = experiment(tmp_path, "megatron")
    overrides = ["slurm=lumi", f"container={generic}", "++container.image=/images/x.sif"]
    script_of(path, overrides, env_for("lumi"))


def test_every_preset_names_its_machine() -> None:
    for folder in ("slurm", "container"):
        for path in (REPO / "config" / folder).glob("*.yaml"):
            assert "\nmachine: " in path.read_text(encoding="utf-8"), path
