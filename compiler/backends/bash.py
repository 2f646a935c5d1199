"""The `bash` backend: one shell command from the config, run by `bash -c`.

The command reaches the script as the quoted value of `oellm_command`, so the launch line
itself holds no config text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from oellm.compiler.errors import Origin, Problem
from oellm.compiler.tree import KeyPath
from oellm.compiler.words import Word


class Bash:
    def torchrun(self, launch: str) -> bool:
        return False

    def launch_words(self, config: Mapping[str, Any], launch: str) -> list[Word]:
        return [Word("bash"), Word("-c"), Word("oellm_command", ref=True)]

    def values(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("oellm_command", config["backend"]["bash"]["command"])]

    def exports(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def resume(self, config: Mapping[str, Any]) -> bool:
        return False

    def checks(
        self, config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
    ) -> Iterator[Problem]:
        return iter(())


BACKEND = Bash()
