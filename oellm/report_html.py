"""The report page: one self-contained HTML file (inline SVG and CSS, no scripts, nothing
fetched), with a stage's loss and throughput curves side by side and a table of every job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from oellm.report_data import JobReport, SweepReport
from oellm.svgplot import Line, chart

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin-bottom: 4px; }
h2 { font-size: 16px; margin-top: 28px; }
.meta, .note { color: #555; font-size: 13px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.empty { padding: 16px; background: #f6f6f6; border: 1px solid #ddd; max-width: 720px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: bold; border-top: 2px solid #999; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
          vertical-align: -1px; border-radius: 2px; }
"""


def render(report: SweepReport) -> str:
    title = f"oellm report: {report.project}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">bundle {escape(report.bundle_id[:12])} · {len(report.jobs)} '
        f"job{'s' if len(report.jobs) != 1 else ''} · "
        + (
            "colour: " + escape(", ".join(report.colour_keys))
            if report.colour_keys
            else "one colour per job"
        )
        + "</p>",
    ]
    for problem in report.problems:
        parts.append(f'<p class="note">left out: {escape(problem)}</p>')
    if not report.has_metrics:
        parts.append(
            '<div class="empty" id="no-metrics"><strong>No training metrics yet.</strong> '
            "Curves appear once Megatron jobs of this bundle have logged iterations and "
            "<code>oellm reconcile</code> has read their logs (each round records them in the "
            "state dir). Jobs that run a plain command log no metrics.</div>"
        )
    else:
        for stage in report.stages:
            jobs = [job for job in report.jobs if job.stage == stage]
            parts.append(f"<h2>stage: {escape(stage or '(none)')}</h2>")
            parts.append('<div class="charts">')
            parts.append(
                chart(
                    [_line(job, job.loss_curve, report.colour_keys) for job in jobs],
                    "loss",
                    "iteration",
                    "lm loss",
                )
            )
            parts.append(
                chart(
                    [_line(job, job.throughput_curve, report.colour_keys) for job in jobs],
                    f"throughput ({report.throughput})",
                    "iteration",
                    report.throughput,
                )
            )
            parts.append("</div>")
    parts.append("<h2>jobs</h2>")
    parts.append(_table(report))
    parts.append(
        '<p class="note">GPU-hours: from the moment each SLURM job of an attempt started '
        "(its <code>.oellm/&lt;id&gt;.started</code> marker) to its end (its "
        "<code>.exit</code> marker, else the end the reconciler recorded, else now), times "
        "the GPUs of its <code>#SBATCH</code> lines, summed over attempts. Loss and "
        "throughput: the last iteration read from the job's log.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _line(job: JobReport, points: Any, keys: Sequence[str]) -> Line:
    return Line(label(job.params, keys) or job.name, job.color, list(points), job=job.name)


def label(params: Mapping[str, Any], keys: Sequence[str]) -> str:
    """`lr=0.001 gbs=512`: the values the colour stands for, by the last part of each key."""
    return " ".join(f"{k.rsplit('.', 1)[-1]}={_value(params.get(k))}" for k in keys)


def _table(report: SweepReport) -> str:
    keys = list(report.colour_keys)
    head = ["job", "stage", *keys, "state", "attempts"]
    numeric = ["iterations", "final loss", report.throughput, "hours", "GPUs", "GPU-hours"]
    rows = [
        "<table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in head)
        + "".join(f'<th class="num">{escape(h)}</th>' for h in numeric)
        + "</tr></thead><tbody>"
    ]
    for job in report.jobs:
        rate = job.tflops_per_gpu if report.throughput.startswith("TFLOP") else job.tokens_per_s
        cells = [
            f'<span class="swatch" style="background:{job.color}"></span>{escape(job.name)}',
            escape(job.stage or "-"),
            *(escape(_value(job.params.get(k))) for k in keys),
            escape(job.state),
            str(job.attempts),
        ]
        numbers = [
            "-" if job.iteration is None else f"{job.iteration}/{job.train_iters}",
            "-" if job.loss is None else f"{job.loss:.4f}",
            "-" if rate is None else f"{rate:,.1f}",
            f"{job.hours:,.2f}",
            str(job.gpus),
            f"{job.gpu_hours:,.2f}",
        ]
        rows.append(
            f'<tr data-job="{escape(job.name)}">'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "".join(f'<td class="num">{n}</td>' for n in numbers)
            + "</tr>"
        )
    span = len(head) + len(numeric) - 3
    rows.append(
        f'</tbody><tfoot><tr><td colspan="{span}">total ({len(report.jobs)} jobs)</td>'
        f'<td class="num">{report.hours:,.2f}</td><td></td>'
        f'<td class="num" id="total-gpu-hours">{report.gpu_hours:,.2f}</td></tr></tfoot></table>'
    )
    return "\n".join(rows)


def _value(value: Any) -> str:
    return "-" if value is None else str(value)
