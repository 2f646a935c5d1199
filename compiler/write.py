"""Write a bundle atomically: build it in a temporary sibling folder, then swap it in.

An existing bundle is replaced only once the new one is complete; a folder that is not a
bundle is never replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from oellm.bundle_files import LOCK_NAME

from .errors import fail
from .pipeline import Bundle


def write_bundle(bundle: Bundle, out: Path) -> None:
    out = out.absolute()
    if out.exists():
        if not out.is_dir():
            raise fail(f"'{out}' exists and is not a folder")
        if any(out.iterdir()) and not (out / LOCK_NAME).is_file():
            raise fail(
                f"'{out}' is not empty and holds no {LOCK_NAME}: refusing to replace it",
                hint="choose a new folder for the bundle, or empty this one",
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        for name, data in sorted(bundle.files.items()):
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if name.endswith(".sbatch"):
                target.chmod(0o755)
        staging.chmod(0o755)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, retired / out.name)
            os.rename(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
