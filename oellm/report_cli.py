"""`oellm report`: a sweep's loss and throughput curves and its GPU-hours, as one HTML page."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from oellm.errors import EXIT_OK
from oellm.guard import guarded


@click.command("report")
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write (self-contained: open it anywhere, offline).",
)
@click.option(
    "--png",
    "png_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write each stage's charts as PNG files into this folder (needs matplotlib: "
    "pip install 'oellm[report]').",
)
@guarded
def report_command(bundle: Path, output: Path, png_dir: Path | None) -> int:
    """Write a report of a bundle's jobs: curves of loss and throughput per stage, coloured
    by the swept values, and a table of iterations, final loss and GPU-hours.

    \b
    It reads the metrics that `oellm reconcile` records from Megatron logs in the state dir;
    it asks no scheduler and changes nothing.
    """
    from oellm.report_data import gather
    from oellm.report_html import render

    report = gather(bundle)
    _write_text(output, render(report))
    curves = sum(1 for job in report.jobs if job.loss_curve)
    click.echo(
        f"wrote {output}: {len(report.jobs)} job{'s' if len(report.jobs) != 1 else ''}, "
        f"{curves} with curves, {report.gpu_hours:,.2f} GPU-hours"
    )
    if not report.has_metrics:
        click.echo(
            "no training metrics yet: they appear once Megatron jobs have logged iterations "
            "and `oellm reconcile` has read their logs"
        )
    if png_dir is not None:
        from oellm.report_png import write_pngs

        for path in write_pngs(report, png_dir):
            click.echo(f"wrote {path}")
    return EXIT_OK


def _write_text(path: Path, text: str) -> None:
    """Whole or not at all: a browser reloading the page never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
