"""`oellm megatron-args`: the argument table and schema of a Megatron-LM checkout (a fork
with arguments of its own), so that `oellm compile --config-dir DIR` checks against them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from oellm.errors import EXIT_OK, OellmError
from oellm.guard import guarded


@click.command("megatron-args")
@click.option(
    "--from",
    "source",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="A Megatron-LM checkout (or its megatron/training/arguments.py).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Folder for megatron-args.json and megatron.schema.json; pass it to `oellm compile "
    "--config-dir` to check configs against these arguments.",
)
@guarded
def megatron_args_command(source: Path, output: Path) -> int:
    """Read Megatron's argument parser from source (parsed, never imported or run) into an
    argument table and the schema `oellm compile` checks `backend.megatron` against.

    \b
    oellm megatron-args --from ~/src/Megatron-LM --output megatron-fork/
    oellm compile exp.yaml --config-dir megatron-fork/ -o bundle/
    """
    return _run(source, output)


def _run(source: Path, output: Path) -> int:
    from oellm.compiler.megatron_table import TableError, build_schema, render
    from oellm.megatron_args import NotAParser, read_checkout

    hint = "point --from at a Megatron-LM checkout (the folder that holds megatron/)"
    try:
        path, table = read_checkout(source)
    except (NotAParser, OSError) as exc:
        raise OellmError(str(exc), hint=hint) from None
    data = {"arguments": table.arguments, "source": f"read from {path} by oellm megatron-args"}
    try:
        schema = build_schema(data, made_by="oellm megatron-args")
    except TableError as exc:
        raise OellmError(
            f"{path}: {exc}", hint="the argument table has a form the schema cannot express"
        ) from None
    if not table.arguments:
        raise OellmError(f"{path}: no add_argument calls found", hint=hint)
    output.mkdir(parents=True, exist_ok=True)
    (output / "megatron-args.json").write_text(
        json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    (output / "megatron.schema.json").write_text(render(schema), encoding="utf-8")
    built = sum(group.arguments for group in table.groups)
    from_dataclasses = (
        f", {built} of them from {len(table.groups)} config dataclasses" if table.groups else ""
    )
    click.echo(
        f"wrote {output / 'megatron-args.json'} and {output / 'megatron.schema.json'}: "
        f"{len(table.arguments)} arguments from {path}{from_dataclasses}"
    )
    for group in table.groups:
        click.echo(f"  {path}:{group.line}: {group.arguments} arguments from {group.dataclass}")
    for skipped in table.skipped:
        where = f"{skipped.file or path}:{skipped.line}"
        click.echo(f"  left out {where}: {skipped.what}: {skipped.why}")
    for factory in table.factories:
        click.echo(
            f"  not read: {path}:{factory.line}: the argument group ArgumentGroupFactory builds "
            f"from {factory.what} at run time ({factory.why}); its arguments are not in this table"
        )
    return EXIT_OK
