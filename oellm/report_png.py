"""PNG charts of a report with matplotlib, for slides and papers (`oellm report --png DIR`).
matplotlib is optional (`pip install 'oellm[report]'`); the HTML page never needs it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.report_data import SweepReport
from oellm.report_html import label


def write_pngs(report: SweepReport, folder: Path) -> list[Path]:
    """`<stage>-loss.png` and `<stage>-throughput.png` per stage; the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a login node
        import matplotlib.pyplot as plt
    except ImportError:
        raise OellmError(
            "--png needs matplotlib, which is not installed",
            hint="pip install 'oellm[report]' (the HTML report needs nothing more)",
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in report.stages:
        jobs = [job for job in report.jobs if job.stage == stage]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stage or "all")
        for what, title in (("loss", "lm loss"), ("throughput", report.throughput)):
            figure: Any
            figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
            for job in jobs:
                curve = job.loss_curve if what == "loss" else job.throughput_curve
                if curve:
                    xs = [x for x, _ in curve]
                    ys = [y for _, y in curve]
                    axes.plot(
                        xs,
                        ys,
                        color=job.color,
                        label=label(job.params, report.colour_keys) or job.name,
                    )
            axes.set_xlabel("iteration")
            axes.set_ylabel(title)
            axes.set_title(f"{stage or ''} {what}".strip())
            if axes.has_data():
                axes.legend(fontsize=7)
            path = folder / f"{name}-{what}.png"
            figure.tight_layout()
            figure.savefig(path)
            plt.close(figure)
            written.append(path)
    return written
