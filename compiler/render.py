"""Lay a planned job out as an sbatch script through a Jinja2 template.

All decisions are made in `script.py`; templates only lay words out. Every config value that
reaches the shell passes through one filter, `q` (shlex.quote); values that an `#SBATCH` line
cannot hold are refused before (`checks.py`), since sbatch, not a shell, parses those lines.
"""

from __future__ import annotations

import functools
import shlex

import jinja2

from oellm.templating import jinja_env

from .script import ScriptPlan
from .words import Directive, Word, scalar


def quote(value: object) -> str:
    """The one quoting choke point for config values that reach the shell."""
    if isinstance(value, Word):
        return f'"${{{value.text}}}"' if value.ref else shlex.quote(value.text)
    return shlex.quote(value if isinstance(value, str) else scalar(value))


@functools.cache
def environment() -> jinja2.Environment:
    return jinja_env("oellm.templates", {"q": quote, "comment": comment})


@functools.cache
def has_template(name: str) -> bool:
    try:
        environment().get_template(name)
    except jinja2.TemplateNotFound:
        return False
    return True


def render(plan: ScriptPlan) -> str:
    """The job's script."""
    return (
        environment()
        .get_template(plan.template)
        .render(
            job_name=plan.job_name,
            stage=plan.stage,
            project=plan.project,
            directives=plan.directives,
            values=plan.values,
            resume=plan.resume,
            exports=plan.exports,
            setup=plan.setup,
            launch=plan.launch,
            rendezvous=plan.rendezvous,
            torchrun=plan.torchrun,
            array=plan.array,
        )
    )


def render_array_script(
    *,
    group: str,
    stage: str | None,
    project: str,
    directives: list[Directive],
    tasks: list[tuple[int, str, str]],
    snapshots: str,
) -> str:
    """The shared script of one array: `tasks` are (index, job script, its sha256);
    `snapshots` the folder (relative to the bundle's root) where the reconciler keeps a copy
    of each member script it submitted, named by its sha256."""
    template = environment().get_template("array.sbatch.j2")
    return template.render(
        group=group,
        stage=stage,
        project=project,
        directives=directives,
        tasks=tasks,
        snapshots=snapshots,
    )


def comment(value: object) -> str:
    """Text for a `#` comment line: control characters would end the comment, so mask them."""
    text = str(value)
    if text.isprintable():
        return text  # the usual case, told in one go
    return "".join(c if c.isprintable() else "?" for c in text)
