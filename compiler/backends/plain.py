"""What a backend that runs one program needs by default: no torchrun, no script variables or
exports of its own, no checkpoint chosen at start, nothing to check beyond the schema. A
backend subclasses `Plain` and overrides only what it adds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from oellm.compiler.errors import Origin, Problem
from oellm.compiler.tree import KeyPath


class Plain:
    def torchrun(self, launch: str) -> bool:
        return False

    def values(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def exports(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def resume(self, config: Mapping[str, Any]) -> bool:
        return False

    def checks(
        self, config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
    ) -> Iterator[Problem]:
        return iter(())
