"""The bundle's JSON files are byte for byte what `json.dumps(indent=2, sort_keys=True,
ensure_ascii=False, default=str)` writes, with or without shared parts encoded once."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oellm.lockfile.jsonbytes import PrettyJson, pretty_json


def reference(value: Any) -> bytes:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return (text + "\n").encode("utf-8")


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_same_bytes_as_the_standard_library(value: Any) -> None:
    assert pretty_json(value) == reference(value)


def test_special_values() -> None:
    for value in (
        {},
        [],
        {"b": [], "a": {}},
        (1, 2.5, 1e-05, 1e16, -0.0),
        {1: "int key", 20: "int key"},
        {2.5: "float key"},
        {True: "bool key"},
        {None: "null key"},
        {"path": PurePosixPath("/x y")},
        'é\n"\\\u2028\x00',
    ):
        assert pretty_json(value) == reference(value), value


def test_shared_parts_are_encoded_once_and_placed_at_any_depth() -> None:
    shared = {"x": [1, {"y": "z"}], "w": {}}
    encoder = PrettyJson({id(shared): 1, id(shared["x"]): 1})
    for index in range(3):
        value = {"a": {"b": shared, "c": [shared, [shared]]}, "s": shared, "i": index}
        assert pretty_json(value, encoder) == reference(value)
