"""The one Jinja2 setup of oellm's templates (job scripts, container definitions): undefined
names are errors, nothing is escaped for HTML, and block tags leave no blank lines."""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping
from typing import Any

import jinja2


def jinja_env(package: str, filters: Mapping[str, Callable[..., Any]]) -> jinja2.Environment:
    """An environment loading the templates shipped in `package`, with `filters`."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(importlib.resources.files(package))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates are package data: no need to look at each file again before each use.
        auto_reload=False,
    )
    env.filters.update(filters)
    return env
