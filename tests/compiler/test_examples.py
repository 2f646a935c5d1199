"""Every example experiment compiles; its scripts and lockfile are reviewed snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oellm import __version__
from tests.helpers import EXAMPLES, compile_file

EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yaml"))


def test_examples_exist() -> None:
    names = {p.stem for p in EXAMPLE_FILES}
    expected = {"demo", "megatron_tiny", "grid", "composable", "multistage", "filter", "nested"}
    assert expected <= names


def _example_id(path: Path) -> str:
    return path.relative_to(EXAMPLES).with_suffix("").as_posix()


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=_example_id)
def test_example_bundle_snapshot(path: Path, text_snapshot: Any) -> None:
    # No environment: examples must compile on a fresh machine with nothing exported.
    bundle = compile_file(path, env={})
    shown = ["plan.lock.json", "plan.txt"]
    first_of_stage: dict[str | None, str] = {}
    for job in bundle.lock_json["jobs"]:
        first_of_stage.setdefault(job["stage"], job["script"])
    shown += list(first_of_stage.values())  # one script per stage keeps the review readable
    text = [f"===== {name} =====\n{bundle.files[name].decode()}" for name in shown]
    # The lockfile records oellm's version; the snapshots hold a placeholder, so that a release
    # does not rewrite every one of them (the value itself is checked here).
    version = f'"oellm_version": "{__version__}"'
    assert bundle.files["plan.lock.json"].decode().count(version) == 1
    assert "\n".join(text).replace(version, '"oellm_version": "<version>"') == text_snapshot
