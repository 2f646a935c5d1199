"""`oellm schema` (the JSON Schemas, for editors and tools) and `oellm config` (the composed
config, or one job's fully resolved config, as YAML; `--show-origin` says where each value was
written)."""

from __future__ import annotations

import importlib.resources
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from oellm.errors import EXIT_OK
from oellm.guard import guarded
from oellm.options import (
    CONFIG_DIR_HELP,
    CONFIG_REF_HELP,
    compile_request,
    config_source_options,
)

_GROUPS = ("slurm", "container", "backend", "job")
_COLUMN = 48  # where origin comments start, so that they line up


@click.command("schema")
@click.option(
    "--authoring",
    "which",
    flag_value="authoring",
    default=True,
    help="Config files as written, for editors (the default).",
)
@click.option("--resolved", "which", flag_value="resolved", help="One job's resolved config.")
@click.option("--lock", "which", flag_value="lock", help="The bundle's plan.lock.json.")
@click.option(
    "--group",
    type=click.Choice(_GROUPS),
    help="With --authoring: the schema of a file of this config group.",
)
@guarded
def schema_command(which: str, group: str | None) -> int:
    """Print a JSON Schema.

    \b
    Editors with the YAML language server take the authoring schema from a first line
      # yaml-language-server: $schema=<path to schemas/experiment.authoring.schema.json>
    """
    from oellm.compiler.authoring import EXPERIMENT, group_file

    if group is not None and which != "authoring":
        raise click.UsageError("--group goes with --authoring")
    name = {
        "authoring": group_file(group) if group else EXPERIMENT,
        "resolved": "experiment.schema.json",
        "lock": "lock.schema.json",
    }[which]
    text = importlib.resources.files("oellm.schemas").joinpath(name).read_text(encoding="utf-8")
    click.echo(text, nl=not text.endswith("\n"))
    return EXIT_OK


@click.command("config")
@click.argument("args", nargs=-1, metavar="[EXPERIMENT.yaml] [OVERRIDES]...")
@click.option("--job", "job", metavar="NAME", help="One job's config, fully resolved.")
@click.option(
    "--show-origin", is_flag=True, help="Follow each value with '# file:line:col' of its source."
)
@config_source_options(CONFIG_REF_HELP, CONFIG_DIR_HELP)
@guarded
def config_command(
    args: tuple[str, ...],
    job: str | None,
    show_origin: bool,
    config_ref: str | None,
    config_dirs: tuple[Path, ...],
) -> int:
    """Print the composed config as YAML (interpolations as written), or with --job NAME that
    job's config after the sweep, sibling references and interpolation.

    \b
    oellm config exp.yaml slurm=lumi --show-origin
    oellm config exp.yaml --job ms_0.0001_stable
    """
    from oellm.compiler.compose import compose
    from oellm.compiler.errors import did_you_mean, fail
    from oellm.compiler.library import Library
    from oellm.compiler.pipeline import compile_bundle
    from oellm.compiler.resolve import JobConfig

    request = compile_request(args, config_ref, config_dirs)
    tree: Mapping[str, Any]
    origins: Mapping[Any, Any]
    if job is None:
        library = Library.for_experiment(request.experiment, request.config_dirs)
        composed = compose(library, request.experiment, request.config_ref, request.overrides)
        tree, origins = composed.tree, composed.origins
    else:
        found: dict[str, JobConfig] = {}

        def keep(name: str, config: JobConfig) -> None:
            if name == job:
                found[name] = config

        bundle = compile_bundle(request, on_job=keep)
        if job not in found:
            names = [j.name for j in bundle.lock.jobs]
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise fail(
                f"the experiment has no job '{job}' ({len(names)} jobs: {shown})",
                hint=did_you_mean(job, names) or "oellm plan lists the jobs",
            )
        tree, origins = found[job].config, found[job].origins
    click.echo(to_yaml(tree, origins if show_origin else None), nl=False)
    return EXIT_OK


def to_yaml(tree: Mapping[str, Any], origins: Mapping[Any, Any] | None) -> str:
    """The tree as block YAML in its own key order; with origins, each scalar is followed by
    the place it was written (the nearest enclosing place for a value nobody wrote)."""
    cwd = os.getcwd()

    def where(path: tuple[Any, ...]) -> str | None:
        assert origins is not None
        for n in range(len(path), 0, -1):
            found = origins.get(path[:n])
            if found is not None:
                return _relative(str(found), cwd)
        return None

    def build(node: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(node, Mapping):
            out = CommentedMap()
            for key, value in node.items():
                out[key] = build(value, (*path, key))
                if origins is not None and not isinstance(value, Mapping | list):
                    place = where((*path, key))
                    if place:
                        out.yaml_add_eol_comment(place, key, column=_COLUMN)
            return out
        if isinstance(node, list):
            seq = CommentedSeq()
            for i, value in enumerate(node):
                seq.append(build(value, (*path, i)))
                if origins is not None and not isinstance(value, Mapping | list):
                    place = where((*path, i))
                    if place:
                        seq.yaml_add_eol_comment(place, i, column=_COLUMN)
            return seq
        return node

    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    buffer = io.StringIO()
    yaml.dump(build(tree, ()), buffer)
    return buffer.getvalue()


def _relative(place: str, cwd: str) -> str:
    """`file:line:col` with the file relative to the current folder when it is below it."""
    if place.startswith(cwd + os.sep):
        return place[len(cwd) + 1 :]
    return place


__all__: Sequence[str] = ("config_command", "schema_command", "to_yaml")
