"""Shared test helpers: writing experiment files and compiling them in-process."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from oellm.compiler.errors import ConfigError
from oellm.compiler.pipeline import Bundle, CompileRequest, compile_bundle

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "experiments"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def compile_file(
    path: Path,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    config_dirs: Sequence[Path] = (),
) -> Bundle:
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
