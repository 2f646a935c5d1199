"""What a bundle was compiled from: the lockfile's `compiled_with` (oellm's version, the
experiment, config ref, config dirs, overrides and renames), so that `oellm compile --check -o
bundle/` can compile it again without being told how.

Paths are recorded relative to the bundle's folder, never as the compiling machine spelled them:
two checkouts in different places record the same bytes, and the bundle finds its experiment
from wherever it is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from oellm import __version__
from oellm.lockfile.codec import PROVENANCE as FIELD

from .errors import fail


def _relative(path: Path, base: Path) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    return PurePosixPath(Path(relative)).as_posix()


def compiled_with(
    *,
    experiment: Path | None,
    config_ref: str | None,
    config_dirs: Sequence[Path],
    overrides: Sequence[str],
    moved: Mapping[str, str],
    bundle_dir: Path | None,
) -> dict[str, Any]:
    """The record for the lockfile. Without a bundle folder (a compile in memory) paths are
    relative to the working directory."""
    base = bundle_dir if bundle_dir is not None else Path.cwd()
    return {
        "oellm_version": __version__,
        "experiment": None if experiment is None else _relative(experiment, base),
        "config_ref": config_ref,
        "config_dirs": [_relative(d, base) for d in config_dirs],
        "overrides": list(overrides),
        "moved": dict(sorted(moved.items())),
    }


def recorded_arguments(bundle_dir: Path, lock: Mapping[str, Any]) -> dict[str, Any]:
    """The compile arguments a lockfile recorded, with paths made usable from here again:
    experiment, config_ref, config_dirs, overrides, moved."""
    record = lock.get(FIELD)
    if not isinstance(record, Mapping):
        raise fail(
            f"{bundle_dir / 'plan.lock.json'} records no compile arguments (compiled by an "
            "older oellm)",
            hint="give the experiment and overrides once: oellm compile EXP.yaml -o "
            f"{bundle_dir} ...",
        )
    experiment = record.get("experiment")
    return {
        "experiment": None if experiment is None else bundle_dir / experiment,
        "config_ref": record.get("config_ref"),
        "config_dirs": tuple(bundle_dir / d for d in record.get("config_dirs") or ()),
        "overrides": tuple(record.get("overrides") or ()),
        "moved": dict(record.get("moved") or {}),
    }
