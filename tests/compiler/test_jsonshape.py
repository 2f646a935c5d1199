"""`jsonshape.ShapedJson` writes each config byte for byte as `jsonbytes.pretty_json` does,
whatever its values, while it reuses the text of each shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oellm.lockfile import jsonshape
from oellm.lockfile.jsonbytes import PrettyJson, pretty_json
from oellm.lockfile.jsonshape import ShapedJson, ShapedPair

SHARED = {"limits": {"max": 3, "names": ["a", "b"]}, "on": ["X", "Y"]}


def _config(value: Any, other: Any = "x") -> dict[str, Any]:
    return {
        "job": {"name": other, "value": value, "nested": {"list": [value, 1, [other]]}},
        "slurm": SHARED,
        "empty": {"map": {}, "list": []},
        "index": 3,
        "flag": True,
    }


VALUES = [
    0,
    -7,
    10**30,
    1.5,
    1e-5,
    float("nan"),
    float("inf"),
    -float("inf"),
    True,
    False,
    None,
    "",
    'text with "quotes" and \\ and\nlines',
    "ünïcödé ✓ \u2028",
    "\ue0000\ue001",  # what a hole looks like inside
]


def _encoders() -> tuple[ShapedJson, PrettyJson]:
    shared = {id(SHARED): 1, id(SHARED["limits"]): 1, id(SHARED["on"]): 1}
    encoder = PrettyJson(shared)
    return ShapedJson(encoder, shared), encoder


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_each_value_is_written_as_pretty_json_writes_it(value: Any) -> None:
    shaped, encoder = _encoders()
    # The first config of a shape makes its text; the next ones fill it.
    for config in (_config("first"), _config(value), _config(value, other=value)):
        assert shaped.encode(config) == pretty_json(config, encoder)
        assert shaped.encode(config) == pretty_json(config)


def test_configs_of_one_shape_share_one_text() -> None:
    shaped, _ = _encoders()
    for value in VALUES:
        shaped.encode(_config(value))
    assert len(shaped._texts) == 1


def test_other_shapes_and_values_that_are_not_plain_json() -> None:
    shaped, encoder = _encoders()
    configs: list[dict[str, Any]] = [
        {"a": [1, 2], "b": {"c": None}},
        {"a": [1, 2, 3], "b": {"c": None}},  # another length
        {"b": {"c": None}, "a": [1, 2]},  # the same keys in another order
        {"a": (1, 2), "b": {"c": None}},  # a tuple: encoded as a whole
        {"a": {"x": object()}},  # written as its text, as pretty_json does
        {"a": {"x": [{"y": {}}]}, "z": SHARED},
        {},
    ]
    for config in configs:
        assert shaped.encode(config) == pretty_json(config, encoder), config


def test_past_the_shapes_kept_configs_are_encoded_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonshape, "MAX_SHAPES", 1)
    shaped, encoder = _encoders()
    configs = [{"a": list(range(n))} for n in range(1, 5)]
    for config in configs * 2:
        assert shaped.encode(config) == pretty_json(config, encoder)
    assert len(shaped._texts) == 1


PATHS: list[tuple[str | int, ...]] = [("job", "name"), ("job", "nested", "list", 0), ("index",)]


def _set(config: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    """The config with `values` at PATHS (copies along them)."""
    out = {**config, "job": {**config["job"]}}
    out["job"]["nested"] = {"list": list(config["job"]["nested"]["list"])}
    out["job"]["name"], out["job"]["nested"]["list"][0], out["index"] = values
    return out


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_configs_made_from_a_model_fill_its_text(value: Any) -> None:
    shaped, encoder = _encoders()
    model = _config("model")
    key = object()
    for values in ([value, value, value], ["n", value, 1], [value, 2.5, None]):
        config = _set(model, values)
        assert shaped.encode_at(key, model, PATHS, values) == pretty_json(config, encoder)
    assert list(shaped._models) == [key]


def test_a_model_whose_text_has_no_holes_for_its_paths_is_encoded_whole() -> None:
    shaped, _ = _encoders()
    # A mapping where a text is expected, and a model holding what holes look like.
    assert shaped.encode_at(1, _config({"a": 1}), PATHS, ["x", 1, 2]) is None
    assert shaped.encode_at(2, {**_config("m"), "x": "\ue0001\ue001"}, PATHS, ["x", 1, 2]) is None
    assert shaped.encode_at(1, _config("fine"), PATHS, ["x", 1, 2]) is None  # kept per key


def test_percent_signs_in_keys_texts_and_shared_parts() -> None:
    shared_part = {"fmt %s %%": "50%", "n": 1}
    encoder = PrettyJson({id(shared_part): 1})
    shaped = ShapedJson(encoder, {id(shared_part): 1})
    for value in ("%s", "%%", "100% %d", 5):
        config = {"a%": {"%(x)s": value, "b": [value, "%"]}, "s": shared_part}
        assert shaped.encode(config) == pretty_json(config, encoder)
        key = "model"
        model = {"a%": {"%(x)s": "m", "b": ["m", "%"]}, "s": shared_part}
        made = shaped.encode_at(key, model, [("a%", "%(x)s")], [value])
        assert made == pretty_json({**model, "a%": {**model["a%"], "%(x)s": value}}, encoder)


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_both_texts_of_a_pair_are_those_of_their_encoders(value: Any) -> None:
    """The lockfile's pretty text and its bundle id's compact text, from one walk."""
    shared = {id(SHARED): 1, id(SHARED["limits"]): 1, id(SHARED["on"]): 1}
    pair = ShapedPair(PrettyJson(), _compact, shared)
    for config in (_config("first"), _config(value), _config(value, other=value)):
        assert pair.texts(config) == (pretty_json(config).decode()[:-1], _compact(config))


def test_past_the_shapes_kept_pairs_are_encoded_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonshape, "MAX_SHAPES", 1)
    pair = ShapedPair(PrettyJson(), _compact, ())
    configs = [{"a": list(range(n)), "b": "{x}"} for n in range(1, 5)]
    for config in configs * 2:
        assert pair.texts(config) == (pretty_json(config).decode()[:-1], _compact(config))
    assert len(pair._pairs) == 1
