"""sbatch and srun option names are checked at compile time against SLURM's documented options,
with a did-you-mean, and with `slurm.site_options` for what a site adds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from oellm.compiler.slurm_options import SBATCH_22_05, SRUN_22_05
from tests.compiler.test_presets import env_for
from tests.helpers import REPO, compile_error, compile_file, rendered, write

DEMO = """
# @package _global_
project: {name: demo}
backend:
  bash: {command: "true"}
"""


def experiment(tmp_path: Path, extra: str) -> Path:
    return write(tmp_path / "exp.yaml", DEMO + extra)


def test_unknown_sbatch_option_is_a_positioned_error_with_a_suggestion(tmp_path: Path) -> None:
    path = experiment(tmp_path, "slurm:\n  sbatch:\n    tiem: '01:00:00'\n")
    error = compile_error(path)
    (problem,) = error.problems
    assert problem.message == "sbatch has no option --tiem"
    assert problem.key == "slurm.sbatch"
    assert problem.origin is not None
    assert (problem.origin.file, problem.origin.line, problem.origin.col) == (str(path), 7, 5)
    assert problem.hint == "did you mean 'time'?"


def test_unknown_srun_option_and_underscore_spelling(tmp_path: Path) -> None:
    path = experiment(tmp_path, "slurm:\n  srun:\n    cpus_per_tsk: 4\n")
    text = rendered(compile_error(path))
    assert "slurm.srun: srun has no option --cpus-per-tsk" in text
    assert "did you mean 'cpus-per-task'?" in text


def test_an_option_of_the_other_command_says_where_it_belongs(tmp_path: Path) -> None:
    path = experiment(tmp_path, "slurm:\n  sbatch:\n    cpu_bind: none\n")
    (problem,) = compile_error(path).problems
    assert problem.message == "sbatch has no option --cpu-bind"
    assert problem.hint is not None
    assert problem.hint.startswith("--cpu-bind is an srun option: set it under slurm.srun")


def test_an_unknown_name_without_a_close_match_points_at_site_options(tmp_path: Path) -> None:
    path = experiment(tmp_path, "slurm:\n  sbatch:\n    zzqx_flag: true\n")
    (problem,) = compile_error(path).problems
    assert problem.hint == "list it in slurm.site_options.sbatch if your site adds --zzqx-flag"


def test_site_options_let_a_site_flag_through(tmp_path: Path) -> None:
    path = experiment(
        tmp_path,
        """
        slurm:
          sbatch: {my-site-flag: true, time: "00:10:00"}
          srun: {container_image: img.sqsh}
          site_options: {sbatch: [my-site-flag], srun: [container-image]}
        """.replace("\n        ", "\n"),
    )
    script = compile_file(path).files["jobs/demo.sbatch"].decode()
    assert "#SBATCH --my-site-flag\n" in script
    assert "  --container-image=img.sqsh \\\n" in script


def test_a_site_option_of_sbatch_does_not_open_srun(tmp_path: Path) -> None:
    path = experiment(
        tmp_path,
        "slurm:\n  srun: {my-site-flag: 1}\n  site_options: {sbatch: [my-site-flag]}\n",
    )
    assert "srun has no option --my-site-flag" in rendered(compile_error(path))


@pytest.mark.parametrize("name", ["parsable", "test_only", "wait", "wrap"])
def test_options_that_break_submission_are_refused(tmp_path: Path, name: str) -> None:
    path = experiment(tmp_path, f"slurm:\n  sbatch:\n    {name}: true\n")
    (problem,) = compile_error(path).problems
    assert problem.message.startswith(f"--{name.replace('_', '-')} cannot be set here: ")


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = experiment(tmp_path, "slurm:\n  sbatch: {tiem: 1, nodez: 2}\n  srun: {lable: true}\n")
    messages = {p.message for p in compile_error(path).problems}
    assert messages == {
        "sbatch has no option --tiem",
        "sbatch has no option --nodez",
        "srun has no option --lable",
    }


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "config/slurm").glob("*.yaml")))
def test_every_preset_uses_known_option_names(preset: str) -> None:
    compile_file(REPO / "config/experiments/demo.yaml", [f"slurm={preset}"], env=env_for(preset))


def _installed_long_options(command: str) -> set[str] | None:
    try:
        text = subprocess.run(
            ["man", command], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    plain = re.sub(".\b", "", text)
    heads = re.findall(r"^ {0,8}(?:-[A-Za-z], )?--([a-z][a-z0-9-]*)", plain, re.MULTILINE)
    return set(heads) or None


@pytest.mark.parametrize(("command", "table"), [("sbatch", SBATCH_22_05), ("srun", SRUN_22_05)])
def test_the_table_matches_the_installed_man_page(command: str, table: frozenset[str]) -> None:
    """Where SLURM's man pages are installed, every option they document is in the table."""
    found = _installed_long_options(command)
    if found is None:
        pytest.skip(f"no man page for {command} here")
    assert found - table == set()
