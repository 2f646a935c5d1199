"""The compiler's one error type: data (where, what, hint), rendered only by the CLI.

Every user mistake the compiler finds becomes a `ConfigError`; several can travel together in a
`ConfigErrors` so validation reports all of them at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from oellm.errors import OellmError


@dataclass(frozen=True)
class Origin:
    """Where a value came from: a file and a 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """One user error. `key` is the dotted config path, when there is one."""

    message: str
    origin: Origin | None = None
    key: str | None = None
    hint: str | None = None

    def render(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        what = f"{self.key}: " if self.key else ""
        text = f"{where}{what}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(OellmError):
    """One or more user errors in the config; the CLI prints them and exits 2."""

    positioned = True

    def __init__(self, problems: Problem | Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = (
            (problems,) if isinstance(problems, Problem) else tuple(problems)
        )
        super().__init__("\n".join(p.render() for p in self.problems))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[Problem, ...]]]:
        # Sent back by a worker process of the compile (`fanout.py`) as its problems.
        return ConfigError, (self.problems,)

    def render(self) -> str:
        """One block per problem; a problem with no file says `error:` first."""
        return "\n".join(p.render() if p.origin else f"error: {p.render()}" for p in self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)


def fail(
    message: str,
    origin: Origin | None = None,
    key: str | None = None,
    hint: str | None = None,
) -> ConfigError:
    """Build a one-problem error: `raise fail(...)`."""
    return ConfigError(Problem(message, origin, key, hint))


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest known word, or None when nothing is close."""
    import difflib

    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
