"""Shared test helpers: writing experiment files and compiling them in-process."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from oellm.compiler.errors import ConfigError
from oellm.compiler.pipeline import CompiledBundle, CompileRequest, compile_bundle

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "experiments"
# The cluster presets of the config library (config/slurm/<name>.yaml); `local` is this machine.
PRESETS = tuple(sorted(path.stem for path in (REPO / "config" / "slurm").glob("*.yaml")))
CLUSTERS = tuple(name for name in PRESETS if name != "local")
T = TypeVar("T")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def compile_file(
    path: Path,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    config_dirs: Sequence[Path] = (),
) -> CompiledBundle:
    # A bundle beside the experiment: the lockfile records paths relative to it, so the
    # same bytes wherever the checkout or the temporary folder is.
    return compile_bundle(
        CompileRequest(
            experiment=path,
            overrides=overrides,
            env=dict(env or {}),
            config_dirs=config_dirs,
            bundle_dir=path.parent / "bundle",
        )
    )


def compile_error(
    path: Path, overrides: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> ConfigError:
    try:
        compile_file(path, overrides, env)
    except ConfigError as error:
        return error
    raise AssertionError("expected a ConfigError")


def rendered(error: ConfigError) -> str:
    return "\n".join(p.render() for p in error.problems)


class TextFile(SingleFileSnapshotExtension):
    """One plain-text file per snapshot, so a review reads the text itself."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"


def wait_for(
    what: str, probe: Callable[[], T | None], seconds: float = 45.0, every: float = 0.5
) -> T:
    """Poll `probe` until it returns something other than None or False, and return that;
    fail the test, naming `what`, after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {seconds:g} s waiting for {what}")
        time.sleep(every)
