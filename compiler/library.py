"""The config search path: the user's config dirs first, the built-in library last.

`find('slurm/local')` returns the first `slurm/local.yaml` along the path, so a user dir can add
options to a group or shadow a built-in one.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path


def builtin_config_dir() -> Path:
    return Path(str(importlib.resources.files("oellm.config")))


class Library:
    def __init__(self, dirs: Sequence[Path], builtin: Path | None = None) -> None:
        builtin = builtin or builtin_config_dir()
        ordered: list[Path] = []
        for d in [*dirs, builtin]:
            resolved = d.resolve()
            if resolved not in ordered:
                ordered.append(resolved)
        self.dirs = ordered
        self.builtin = builtin.resolve()

    @classmethod
    def for_experiment(
        cls, experiment: Path | None, config_dirs: Sequence[Path], builtin: Path | None = None
    ) -> Library:
        """Config dirs given with --config-dir, then those found next to the experiment file.

        Next to the experiment means: the folder above an `experiments/` folder that holds it,
        a `config/` folder beside it, and the experiment's own folder.
        """
        dirs = list(config_dirs)
        if experiment is not None:
            here = experiment.resolve().parent
            for ancestor in [here, *here.parents]:
                if ancestor.name == "experiments":
                    dirs.append(ancestor.parent)
                    break
            if (here / "config").is_dir():
                dirs.append(here / "config")
            dirs.append(here)
        return cls(dirs, builtin)

    def find(self, ref: str) -> tuple[Path, str] | None:
        """The file for `group/option` (or a plain config path), and how to name it to users."""
        for d in self.dirs:
            candidate = d / f"{ref}.yaml"
            if candidate.is_file():
                return candidate, self._display(candidate, d)
        return None

    def options(self, group: str) -> list[str]:
        names: set[str] = set()
        for d in self.dirs:
            folder = d / group if group else d
            if folder.is_dir():
                names.update(p.stem for p in folder.glob("*.yaml"))
        return sorted(names)

    def is_group(self, name: str) -> bool:
        return any((d / name).is_dir() for d in self.dirs)

    def group_of(self, experiment: Path) -> str:
        """The group folder an experiment file sits in, relative to a user config dir."""
        resolved = experiment.resolve()
        for d in self.dirs:
            if d != self.builtin and d in resolved.parents:
                return _folder(resolved.parent.relative_to(d))
        if self.builtin in resolved.parents:
            return _folder(resolved.parent.relative_to(self.builtin))
        return ""

    def describe(self) -> str:
        return ", ".join(self._display_dir(d) for d in self.dirs)

    def _display(self, path: Path, root: Path) -> str:
        if root == self.builtin:
            return f"<oellm>/config/{path.relative_to(root).as_posix()}"
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.as_posix()

    def _display_dir(self, d: Path) -> str:
        if d == self.builtin:
            return "<oellm>/config"
        try:
            return d.relative_to(Path.cwd()).as_posix() or "."
        except ValueError:
            return d.as_posix()


def _folder(rel: Path) -> str:
    text = rel.as_posix()
    return "" if text == "." else text
