"""The `bash` backend: one shell command from the config, run by `bash -c`.

The command reaches the script as the quoted value of `oellm_command`, so the launch line
itself holds no config text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oellm.compiler.words import Word

from .plain import Plain


class Bash(Plain):
    def launch_words(self, config: Mapping[str, Any], launch: str) -> list[Word]:
        return [Word("bash"), Word("-c"), Word("oellm_command", ref=True)]

    def values(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("oellm_command", config["backend"]["bash"]["command"])]


BACKEND = Bash()
