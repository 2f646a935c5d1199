"""The lockfile's records: `replaced` copies a job as `dataclasses.replace` does."""

from __future__ import annotations

import dataclasses

import pytest

from oellm.lockfile.model import LockJob, RestartPolicy, replaced

JOB = LockJob(
    name="a",
    script="jobs/a.sbatch",
    sha256="0" * 64,
    output_dir="/o",
    log_path="/o/log",
    params={"x": 1},
    restart=RestartPolicy.from_json({"on": ["TIMEOUT"]}),
    reads=("/r",),
)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"array_group": "g", "array_index": 3, "array_throttle": None},
        {"reads": ("/x", "/y"), "name": "b"},
        {field.name: None for field in dataclasses.fields(LockJob)},
    ],
    ids=["nothing", "array", "reads", "every_field"],
)
def test_a_job_replaced_is_the_job_dataclasses_replace_makes(changes: dict[str, object]) -> None:
    made = replaced(JOB, **changes)
    expected = dataclasses.replace(JOB, **changes)  # type: ignore[arg-type]
    assert made == expected
    assert [getattr(made, f.name) for f in dataclasses.fields(LockJob)] == [
        getattr(expected, f.name) for f in dataclasses.fields(LockJob)
    ]
    assert replaced(JOB) is not JOB and JOB.reads == ("/r",)  # the job itself is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.name = "c"  # type: ignore[misc]


def test_a_field_a_job_does_not_have_is_refused() -> None:
    with pytest.raises(TypeError, match="no field 'nme'"):
        replaced(JOB, nme="b")
