"""`oellm report`: a sweep run end to end on the local scheduler with a fake Megatron, then its
page: valid HTML, one curve per job and chart, colours that follow the swept lr, GPU-hours
from the start and exit markers; a bundle without metrics gives a clear page, not a crash."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from oellm.cli import main
from oellm.svgplot import sequential, ticks
from tests.helpers import write

FAKE_MEGATRON = Path(__file__).parent / "reconciler" / "fake_megatron"
SWEEP = """
defaults:
  - /backend: megatron
project: {name: lrs}
job: {name: "lrs_${stage}_${backend.megatron.lr}"}
stage: stable
slurm: {sbatch: {gres: "gpu:4"}}
backend:
  megatron:
    seq_length: 64
    global_batch_size: 8
    train_iters: 30
sweep:
  type: product
  groups:
    - params:
        backend.megatron.lr: [1.0e-3, 3.0e-4, 3.0e-3]
    - type: list
      configs:
        - {stage: stable, backend.megatron.train_iters: 30}
        - {stage: decay, backend.megatron.train_iters: 10}
"""
LRS = ("0.0003", "0.001", "0.003")


class Page(HTMLParser):
    """The parts of the page the tests look at; fails on unbalanced tags."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.curves: list[dict[str, str]] = []
        self.rows: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag not in {"meta", "rect", "line", "br"}:
            self.stack.append(tag)
        if tag == "polyline":
            self.curves.append(found)
        if tag == "tr" and "data-job" in found:
            self.rows.append(found["data-job"])
        if "id" in found:
            self.ids.add(found["id"])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <rect .../> and the like: nothing to balance

    def handle_endtag(self, tag: str) -> None:
        if tag in {"meta", "rect", "line", "br"}:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.stack == []
    return page


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MEGATRON_LM_DIR", str(FAKE_MEGATRON))
        patch.delenv("OUTPUT_DIR", raising=False)
        write(folder / "exp.yaml", SWEEP)
        assert main(["compile", "exp.yaml", "-o", "b"]) == 0
        code = main(["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"])
        assert code == 0
        yield folder


def test_the_page_has_one_curve_per_job_and_chart(
    swept: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["report", str(swept / "b"), "-o", str(swept / "r.html")], capsys)
    assert code == 0 and "6 jobs, 6 with curves" in out
    page = parse(swept / "r.html")
    jobs = {f"lrs_{stage}_{lr}" for stage in ("stable", "decay") for lr in LRS}
    # Two charts per stage (loss, throughput), each with one curve per job of the stage.
    assert sorted(c["data-job"] for c in page.curves) == sorted([*jobs, *jobs])
    assert set(page.rows) == jobs
    assert "no-metrics" not in page.ids
    # Nothing is fetched: no scripts, no external links or images.
    html = (swept / "r.html").read_text()
    assert not re.search(r"<script|<link|src=|href=", html)


def test_colours_follow_the_swept_lr(swept: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["report", str(swept / "b"), "-o", str(swept / "r.html")], capsys)
    page = parse(swept / "r.html")
    colour = {c["data-job"]: c["stroke"] for c in page.curves}
    # The jobs of one sweep point share a colour in every stage; the scale goes by lr's order.
    for rank, lr in enumerate(LRS):
        assert colour[f"lrs_stable_{lr}"] == colour[f"lrs_decay_{lr}"] == sequential(0.45 * rank)
    assert "colour: backend.megatron.lr" in "".join(page.text)


def test_gpu_hours_come_from_the_markers_and_the_gres(
    swept: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from oellm.report_data import gather

    report = gather(swept / "b")
    job = next(j for j in report.jobs if j.name == "lrs_stable_0.001")
    assert job.gpus == 4 and job.state == "COMPLETED" and job.attempts == 1
    assert 0 < job.hours < 0.1 and job.gpu_hours == pytest.approx(job.hours * 4)
    assert (job.iteration, job.train_iters) == (30, 30)
    assert job.loss is not None and job.loss == pytest.approx(job.loss_curve[-1][1])
    assert report.gpu_hours == pytest.approx(sum(j.gpu_hours for j in report.jobs))
    # A smaller lr ends with a higher loss (the fake falls faster for a larger one).
    final = {j.name: j.loss for j in report.jobs if j.stage == "stable"}
    assert final["lrs_stable_0.0003"] > final["lrs_stable_0.001"] > final["lrs_stable_0.003"]


def test_a_bundle_without_metrics_gives_a_clear_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    write(tmp_path / "exp.yaml", SWEEP)
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, err = run(["report", "b"], capsys)
    assert (code, err) == (0, "")
    assert "no training metrics yet" in out
    page = parse(tmp_path / "report.html")
    assert "no-metrics" in page.ids and page.curves == []
    assert len(page.rows) == 6


def test_png_without_matplotlib_is_a_clear_error(
    swept: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(
        ["report", str(swept / "b"), "-o", str(swept / "x.html"), "--png", "p"], capsys
    )
    assert code == 2 and "matplotlib" in err and "oellm[report]" in err


def test_png_with_matplotlib(
    swept: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    code, out, _ = run(
        ["report", str(swept / "b"), "-o", str(tmp_path / "r.html"), "--png", str(tmp_path / "p")],
        capsys,
    )
    assert code == 0 and out.count(".png") == 4
    pngs = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert pngs == [
        "decay-loss.png",
        "decay-throughput.png",
        "stable-loss.png",
        "stable-throughput.png",
    ]
    assert all((tmp_path / "p" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in pngs)


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, 10.5), (1.02, 10.9), (150.3, 153.0), (5.0, 5.0), (-3.0, 2e6)]
)
def test_axis_ticks_cover_the_data(low: float, high: float) -> None:
    found = ticks(low, high)
    assert found[0] <= low and found[-1] >= high and len(found) <= 12
