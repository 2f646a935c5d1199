"""`render_shape.ShapedScripts` writes each script byte for byte as `render.render` does,
whatever the plan's texts, while it renders each shape of plan once."""

from __future__ import annotations

import dataclasses

import pytest

from oellm.compiler import render_shape
from oellm.compiler.render import render
from oellm.compiler.render_shape import ShapedScripts, _lays_out_only
from oellm.compiler.script import ScriptPlan
from oellm.compiler.words import Word


def _plan(text: str, **changes: object) -> ScriptPlan:
    plan = ScriptPlan(
        template="base.sbatch.j2",
        job_name=f"job_{text}",
        stage=text,
        project="p",
        directives=(("--job-name", f"job_{text}"), ("--time", "10"), ("--no-requeue", None)),
        values=(("oellm_job_name", text), ("oellm_command", f"echo {text}")),
        exports=(("A", text),),
        setup=(f"module load {text}",),
        launch=(
            Word("srun"),
            Word(f"--comment={text}", True, separator=" "),
            Word("oellm_command", ref=True, separator=" "),
        ),
        resume=False,
        rendezvous=False,
        torchrun=False,
        array=False,
    )
    return dataclasses.replace(plan, **changes)  # type: ignore[arg-type]


TEXTS = [
    "plain",
    "two words",
    'it\'s "quoted" $HOME `x` \\ ;|&',
    "new\nline\ttab",
    "ünïcödé",
    "\x07bell",
    "\ue0000\ue001",  # what a hole looks like inside
    "-",
    "{0} {} {{x}} $(id)",  # fields of a format string, written as they are
]


@pytest.mark.parametrize("text", TEXTS, ids=repr)
@pytest.mark.parametrize("template", ["base.sbatch.j2", "juwels.sbatch.j2", "lumi.sbatch.j2"])
def test_each_text_is_written_as_render_writes_it(text: str, template: str) -> None:
    scripts = ShapedScripts()
    # The first plan of a shape makes its text; the next ones fill it.
    for plan in (_plan("first"), _plan(text), _plan(text, project=text, rendezvous=True)):
        plan = dataclasses.replace(plan, template=template)
        assert scripts.render(plan) == render(plan)


def test_what_decides_the_layout_is_part_of_the_shape() -> None:
    scripts = ShapedScripts()
    plans = [
        _plan("a"),
        _plan("a", stage=None),
        _plan("a", stage=""),  # empty: the stage line is left out, as for none
        _plan("a", setup=()),
        _plan("a", directives=(("--time", None),)),
        _plan("a", launch=(Word("a"), Word("b", ref=True, separator=" \\\n  "))),
        _plan("a", launch=(Word(""),)),
        _plan("a", resume=True, torchrun=True, array=True, rendezvous=True),
    ]
    for plan in [*plans, *(dataclasses.replace(p, job_name="other") for p in plans)]:
        assert scripts.render(plan) == render(plan)
    assert len(scripts._texts) == len(plans)


def test_templates_that_read_their_texts_are_rendered_job_by_job() -> None:
    assert _lays_out_only("base.sbatch.j2")
    assert _lays_out_only("lumi.sbatch.j2")
    # The array script compares and formats its values: never filled.
    assert not _lays_out_only("array.sbatch.j2")


def test_past_the_shapes_kept_scripts_are_rendered_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_shape, "MAX_SHAPES", 1)
    scripts = ShapedScripts()
    plans = [_plan("a", setup=("x",) * n) for n in range(4)]
    for plan in plans * 2:
        assert scripts.render(plan) == render(plan)
    assert len(scripts._texts) == 1
