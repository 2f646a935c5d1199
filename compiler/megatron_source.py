"""Which Megatron argument schema a compile checks `backend.megatron` against: the shipped one,
or a fork's (`oellm megatron-args --from CHECKOUT --output DIR`), found as
`megatron.schema.json` in a `--config-dir` folder (the first that holds one wins).

The schema is read through cached functions (backends/megatron.py, validate.py); choosing
another one clears those caches on the way in and on the way out, so one process can compile
bundles against different schemas one after the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import validate
from .backends import megatron
from .errors import Origin, fail

SCHEMA_NAME = "megatron.schema.json"
_HINT = "write it with: oellm megatron-args --from MEGATRON_CHECKOUT --output DIR"


def find(config_dirs: Sequence[Path]) -> Path | None:
    for folder in config_dirs:
        if (folder / SCHEMA_NAME).is_file():
            return folder / SCHEMA_NAME
    return None


def read(path: Path) -> dict[str, Any]:
    """A fork's schema, checked for what the compiler reads of it."""
    try:
        schema: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(
            f"cannot read the Megatron argument schema: {exc}", Origin(str(path), 1, 1), hint=_HINT
        ) from None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not all(
        isinstance(p, dict) and isinstance(p.get("x-megatron"), dict) and "flag" in p["x-megatron"]
        for p in properties.values()
    ):
        raise fail(
            "not a Megatron argument schema: each of its `properties` needs an `x-megatron` "
            "annotation with the flag",
            Origin(str(path), 1, 1),
            hint=_HINT,
        )
    found: dict[str, Any] = schema
    return found


@contextmanager
def schema_from(config_dirs: Sequence[Path]) -> Iterator[Path | None]:
    """Compile against the fork's schema of `config_dirs`, if one holds it."""
    path = find(config_dirs)
    if path is None:
        yield None
        return
    schema = read(path)
    megatron.use_schema(schema)
    _forget()
    try:
        yield path
    finally:
        megatron.use_schema(None)
        _forget()


def _forget() -> None:
    for cached in (
        megatron.megatron_schema,
        megatron._annotations,
        megatron.megatron_dests,
        megatron._names,
        megatron.suggest_argument,
        validate.experiment_validator,
    ):
        cached.cache_clear()
