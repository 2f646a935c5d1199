"""Benchmarks time oellm as it runs once installed: with its modules' bytecode cached (pip
compiles a wheel's modules when it installs them). A shell with PYTHONDONTWRITEBYTECODE set
would otherwise make every timed process compile each module it imports again."""

from __future__ import annotations

import compileall
import importlib
import os

PACKAGES = ("oellm", "oellm.compiler", "oellm.reconciler", "oellm.lockfile", "oellm.container")


def cached() -> None:
    """Write the bytecode of oellm's modules, and let the processes started from here use it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for name in PACKAGES:
        for folder in importlib.import_module(name).__path__:
            compileall.compile_dir(folder, quiet=1)
