"""Job scripts from a text with holes, filled with each job's own words.

The plans of a sweep's jobs differ in their texts (names, paths, commands) and mostly not in
their shape: which template, how many directives, values and launch words, which flags. A
template that only lays texts out (prints them, quotes them with `q`, masks them with
`comment`, tests whether they are empty or none, never reads what they say) gives, for one
shape, the same script but for those texts. That script is rendered once per shape with
markers for the texts, and checked: filled with the first job's texts it must be byte for
byte what `render.render` writes for that job, or the shape is rendered job by job as before.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import jinja2
from jinja2 import nodes

from oellm.templating import jinja_env

from .render import comment, environment, quote, render
from .script import ScriptPlan
from .words import Word

MAX_SHAPES = 256
"""Shapes kept; past them a script is rendered whole (jobs that share no shape would keep a
text each, and render each one three times)."""

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters around a hole's number
_HOLE = re.compile(f"{_OPEN}([0-9]+)([qc]?){_CLOSE}")
_FILTERS: dict[str, Callable[[Any], str]] = {"": str, "q": quote, "c": comment}
_UNKNOWN: Any = object()
# Pieces, and the value of each hole between with the filter it goes through.
_Text = tuple[list[str], list[tuple[int, Callable[[Any], str]]]]


class ShapedScripts:
    def __init__(self) -> None:
        self._texts: dict[tuple[Any, ...], _Text | None] = {}

    def render(self, plan: ScriptPlan) -> str:
        """The job's script, as `render.render` writes it."""
        if not _lays_out_only(plan.template):
            return render(plan)
        shape: list[Any] = [plan.template]
        values: list[Any] = []
        for value in _field_values()(plan):
            # As `_walk` takes them, the texts and flags of the plan's top without a call.
            kind = type(value)
            if kind is str and value:
                shape.append(str)
                values.append(value)
            elif kind is bool or value is None:
                shape.append(value)
            else:
                _walk(value, shape, values)
        key = tuple(shape)
        try:
            text = self._texts.get(key, _UNKNOWN)
        except TypeError:  # a value that cannot be part of a key (a list): job by job
            return render(plan)
        if text is _UNKNOWN:
            if len(self._texts) >= MAX_SHAPES:
                return render(plan)
            text = self._texts[key] = _pieces(plan, values)
        return render(plan) if text is None else _fill(text, values)


@functools.cache
def _fields() -> tuple[str, ...]:
    """The plan's fields but its template's name (a part of the shape)."""
    return tuple(f.name for f in fields(ScriptPlan) if f.name != "template")


@functools.cache
def _field_values() -> Callable[[ScriptPlan], tuple[Any, ...]]:
    """The values of `_fields` of a plan, at once."""
    return operator.attrgetter(*_fields())


def _walk(value: Any, shape: list[Any], values: list[Any]) -> None:
    """The shape of a plan's field, and its texts (a launch word whole: `q` quotes it by its
    kind), in order. (Exact types: this runs for every job; the words of the launch line and
    the pairs of directives, values and exports are walked here, not one call each.)"""
    kind = type(value)
    if kind is str and value:
        shape.append(str)
        values.append(value)
    elif kind is tuple:
        shape.append(len(value))
        for item in value:
            kind = type(item)
            if kind is str and item:
                shape.append(str)
                values.append(item)
            elif kind is Word:
                shape.append((Word, item.new_line, item.ref, item.separator, item.text == ""))
                values.append(item)
            elif kind is tuple:
                shape.append(len(item))
                for inner in item:
                    if type(inner) is str and inner:
                        shape.append(str)
                        values.append(inner)
                    elif inner is None:
                        shape.append(None)  # a flag's value
                    else:
                        _walk(inner, shape, values)
            else:
                _walk(item, shape, values)
    elif kind is Word:
        shape.append((Word, value.new_line, value.ref, value.separator, value.text == ""))
        values.append(value)
    else:
        shape.append(value)  # flags, None, "": they decide what the template writes


def _marked(value: Any, counter: Any) -> Any:
    """`value` with each text that `_walk` takes a marker, numbered in the same order."""
    kind = type(value)
    if kind is str and value:
        return f"{_OPEN}{next(counter)}{_CLOSE}"
    if kind is Word:
        return Word(f"{_OPEN}{next(counter)}{_CLOSE}", value.new_line, value.ref, value.separator)
    if kind is tuple:
        return tuple(_marked(item, counter) for item in value)
    return value


def _pieces(plan: ScriptPlan, values: list[Any]) -> _Text | None:
    counter = iter(range(len(values)))
    marked = ScriptPlan(
        template=plan.template, **{n: _marked(getattr(plan, n), counter) for n in _fields()}
    )
    try:
        script = _marking_render(marked)
    except Exception:  # a template that reads its texts: render job by job
        return None
    parts = _HOLE.split(script)
    pieces = parts[::3]
    holes = [(int(n), _FILTERS[kind]) for n, kind in zip(parts[1::3], parts[2::3], strict=True)]
    if any(_OPEN in p or _CLOSE in p for p in pieces):
        return None  # a marker's character in the plan itself, or a hole masked
    text = (pieces, holes)
    return text if _fill(text, values) == render(plan) else None


def _fill(text: _Text, values: list[Any]) -> str:
    pieces, holes = text
    out = [pieces[0]]
    for (number, fill), after in zip(holes, pieces[1:], strict=True):
        out.append(fill(values[number]))
        out.append(after)
    return "".join(out)


def _marking_render(plan: ScriptPlan) -> str:
    template = _marking_environment().get_template(plan.template)
    return template.render(**{f.name: getattr(plan, f.name) for f in fields(plan)})


@functools.cache
def _marking_environment() -> jinja2.Environment:
    """The scripts' environment, whose filters leave holes as holes, marked with the filter
    that fills them."""
    # An environment of its own (an overlay would share the filters and compiled templates).
    return jinja_env(
        "oellm.templates", {"q": _mark_filter("q", quote), "comment": _mark_filter("c", comment)}
    )


def _mark_filter(kind: str, real: Callable[[Any], str]) -> Callable[[Any], str]:
    def marking(value: Any) -> str:
        text = value.text if isinstance(value, Word) else value
        if isinstance(text, str) and _HOLE.fullmatch(text):
            return text[:-1] + kind + _CLOSE
        return real(value)

    return marking


# What a template may do with a plan's texts for its scripts to be filled: print them, filter
# them with `q` or `comment`, test them (empty or not, none or not), loop over tuples.
_NODES = (
    nodes.Template,
    nodes.Extends,
    nodes.Block,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.For,
    nodes.If,
    nodes.Not,
    nodes.Tuple,
)


@functools.cache
def _lays_out_only(name: str) -> bool:
    env = environment()
    try:
        source, _, _ = env.loader.get_source(env, name) if env.loader else ("", None, None)
        tree = env.parse(source)
    except jinja2.TemplateError:
        return False
    for node in tree.find_all(nodes.Node):
        if isinstance(node, nodes.Extends):
            parent = node.template
            if not (isinstance(parent, nodes.Const) and _lays_out_only(str(parent.value))):
                return False
        elif isinstance(node, nodes.Filter):
            if node.name not in ("q", "comment"):
                return False
        elif isinstance(node, nodes.Test):
            if node.name != "none":
                return False
        elif isinstance(node, nodes.Getattr):
            if node.attr != "separator":
                return False
        elif not isinstance(node, _NODES):
            return False
    return True
