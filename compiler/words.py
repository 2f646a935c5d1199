"""The words a script is made of: one argv word of a launch line, and one `#SBATCH` directive.

Plain data shared by the script plan, the backends and the renderer; quoting happens only in
the renderer's `q` filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Directive = tuple[str, str | None]  # ("--time", "10"); a bare flag has None


@dataclass(frozen=True)
class Word:
    """One argv word of the launch line; `ref` words expand a script variable."""

    text: str
    new_line: bool = False
    ref: bool = False
    separator: str = ""


def scalar(value: Any) -> str:
    """A config scalar as the text a program reads (true/false, floats as Python writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def long_options(options: Mapping[str, Any], dashes: bool = True) -> list[Word]:
    """`--key=value` words of a long-option map: true is a bare flag, false and null drop it.
    `dashes` spells `a_b` as `--a-b` (SLURM's spelling); torchrun options stay as written."""
    words: list[Word] = []
    for key, value in options.items():
        option = "--" + (key.replace("_", "-") if dashes else key)
        if value is None or value is False:
            continue
        words.append(Word(option if value is True else f"{option}={scalar(value)}", True))
    return words
