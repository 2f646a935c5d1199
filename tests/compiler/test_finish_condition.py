"""`job.finish_condition`: a job whose output already exists is not submitted. The compiler
validates the condition, resolves it per job and writes it to the lockfile (optional field)."""

from __future__ import annotations

from pathlib import Path

from oellm.compiler.write import write_bundle
from oellm.reconciler.bundle import load_bundle
from tests.helpers import compile_error, compile_file, rendered, write

EXPERIMENT = """
project: {{name: fin}}
backend: {{bash: {{command: "true"}}}}
job:
  name: fin_${{vars.n}}
{finish}
vars: {{n: 0}}
sweep:
  type: product
  params:
    vars.n: [1, 2]
"""
FINISH = """  finish_condition:
    class_name: FileExistsCondition
    path: ${job.base_output_dir}/done.txt
"""


def test_the_condition_reaches_the_lockfile_resolved_per_job(tmp_path: Path) -> None:
    path = write(tmp_path / "e.yaml", EXPERIMENT.format(finish=FINISH))
    bundle = compile_file(path)
    conditions = [job["finish_condition"] for job in bundle.lock_json["jobs"]]
    assert conditions == [
        {"class_name": "FileExistsCondition", "path": "./output/fin_1/done.txt"},
        {"class_name": "FileExistsCondition", "path": "./output/fin_2/done.txt"},
    ]
    assert (
        "Not submitted when done: FileExists: .../output/fin_1/done.txt"
        in bundle.files["plan.txt"].decode()
    )
    write_bundle(bundle, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    assert loaded.jobs[0].finish_condition == conditions[0]


def test_without_one_the_lockfile_has_no_field(tmp_path: Path) -> None:
    bundle = compile_file(write(tmp_path / "e.yaml", EXPERIMENT.format(finish="")))
    assert all("finish_condition" not in job for job in bundle.lock_json["jobs"])
    write_bundle(bundle, tmp_path / "b")
    assert load_bundle(tmp_path / "b").jobs[0].finish_condition is None


def test_a_bad_condition_is_a_compile_error(tmp_path: Path) -> None:
    bad = FINISH.replace("FileExistsCondition", "FileExistCondition")
    text = rendered(compile_error(write(tmp_path / "e.yaml", EXPERIMENT.format(finish=bad))))
    assert "job.finish_condition" in text and ":5:" in text
