"""Environment values that hold shell variable syntax (`$NAME`, `${NAME}`).

Env values are data: the script quotes each one, so `$HOME` reaches the job as those five
characters, never as the home folder. Such a value is almost always meant to be expanded, so
it is refused with the two ways to say what was meant. oellm's own `${...}` interpolations are
resolved before this check; what it sees is literal text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import Origin, Problem
from .tree import KeyPath, origin_of

_REFERENCE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
SECTIONS: tuple[str, ...] = ("slurm", "backend", "container")


def shell_reference(value: str) -> tuple[str, str] | None:
    """The first `$NAME` or `${NAME...}` in a value and the variable it names, or None."""
    match = _REFERENCE.search(value)
    if match is None:
        return None
    return match.group(0), match.group("braced") or match.group("bare")


def check_env_values(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    for section in SECTIONS:
        env = (config.get(section) or {}).get("env") or {}
        for name, value in env.items():
            found = shell_reference(value) if isinstance(value, str) else None
            if found is None:
                continue
            reference, variable = found
            path: KeyPath = (section, "env", name)
            yield Problem(
                f"{reference} would reach the job as the literal text {reference}: env values "
                "are quoted, never expanded by a shell",
                origin_of(origins, path),
                key=f"{section}.env.{name}",
                hint=f"take it from the environment of the compile with ${{oc.env:{variable}}}; "
                "or, to let the job's shell expand it when the job starts, export the variable "
                f'in slurm.setup, which is shell code: export {name}="..."',
            )
