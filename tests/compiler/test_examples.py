"""Every example experiment compiles; its scripts and lockfile are reviewed snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from tests.helpers import EXAMPLES, compile_file

EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yaml"))


class TextFile(SingleFileSnapshotExtension):
    """One plain-text file per snapshot, so a review reads the script itself."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"


@pytest.fixture
def text_snapshot(snapshot: Any) -> Any:
    return snapshot.use_extension(TextFile)


def test_examples_exist() -> None:
    names = {p.stem for p in EXAMPLE_FILES}
    assert {"demo", "megatron_tiny"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_bundle_snapshot(path: Path, text_snapshot: Any) -> None:
    # No environment: examples must compile on a fresh machine with nothing exported.
    bundle = compile_file(path, env={})
    text = []
    for name in sorted(bundle.files):
        text.append(f"===== {name} =====\n{bundle.files[name].decode()}")
    assert "\n".join(text) == text_snapshot
