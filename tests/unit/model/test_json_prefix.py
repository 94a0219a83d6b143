"""The JSON-prefix validator behind constrained decoding: accepts exactly the prefixes of valid documents."""

import json
import random

import jsonschema
import pytest
from gpt_model.json_prefix import JSONPrefix, UnsupportedSchema, compile_schema

pytestmark = pytest.mark.unit

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "bb", "b"]}},
        "ok": {"type": ["boolean", "null"]},
        "nested": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
    },
    "required": ["name", "age", "nested"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "doc",
    [
        "{}",
        '{"a": 1, "b": [1, 2.5e10, -0.5, 0], "c": {"d": null, "e": true, "f": false}, "g": "x\\u00e9\\n\\"é"}',
        '{ "a" : "b" ,\n\t"": [] }',
        '{"a":[[[{}]]]}',
    ],
)
def test_every_prefix_of_a_valid_object_is_accepted_and_the_whole_is_done(doc):
    state = JSONPrefix.start()
    for i, c in enumerate(doc):
        assert not state.done
        state = state.feed(c)
        assert state is not None, doc[: i + 1]
    assert state.done and state.closing() == ""


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '"s"',
        "1",
        '{"a":}',
        '{"a":01}',
        '{"a" 1}',
        "{,}",
        '{"a":1,}',
        '{"a":1}x',
        '{"a":1} ',
        '{"a":tru}',
        '{"a":"\x01"}',
        '{"a":"\\x"}',
        "{'a':1}",
        '{"a":.5}',
        '{"a":-}',
        '{"a":1.}',
        "{" + " " * 9 + "}",
    ],
)
def test_invalid_text_is_refused_at_the_first_bad_character(text):
    assert JSONPrefix.start().feed(text) is None


def test_states_are_immutable_so_candidates_can_be_tried_from_the_same_state():
    state = JSONPrefix.start().feed('{"a":')
    assert state.feed("1}").done
    assert state.feed("x") is None
    assert state.feed('"s"}').done


@pytest.mark.parametrize(
    "prefix",
    [
        '{"a',
        '{"a":',
        '{"a":[1,',
        '{"a":"x\\',
        '{"a":"x\\u0',
        '{"a":-',
        '{"a":1.',
        '{"a":1e',
        '{"a":1e-',
        '{"a":t',
        '{"a":1',
        '{"',
        '{"a":[{"b":[',
    ],
)
def test_closing_completes_any_prefix_to_valid_json(prefix):
    state = JSONPrefix.start().feed(prefix)
    closing = state.closing()
    assert state.feed(closing).done
    assert isinstance(json.loads(prefix + closing), dict)


def test_a_schema_restricts_keys_types_and_enums_and_the_closing_fills_required_properties():
    start = JSONPrefix.start(compile_schema(PERSON))
    assert json.loads(start.closing()) == {"name": "", "age": 0, "nested": {"x": 0}}
    assert start.feed('{"x"') is None  # undeclared key
    assert start.feed('{"age":"1"') is None  # wrong type
    assert start.feed('{"age":1.5') is None  # integer
    assert start.feed('{"name":"a"}') is None  # required properties missing
    assert start.feed('{"age":1,"age"') is None  # a key twice
    assert start.feed('{"tags":["c"') is None  # not in the enum
    assert start.feed('{"ok":"yes"') is None
    assert set(start.feed('{"n').first_chars()) == {"a", "e"}  # n-ame or n-ested
    good = '{"name": "Ann", "age": 31, "score": -1.5e3, "tags": ["bb", "b"], "ok": null, "nested": {"x": 2}}'
    assert start.feed(good).done
    jsonschema.validate(json.loads(good), PERSON)


def _random_walk(state: JSONPrefix, rng: random.Random, steps: int) -> str:
    """Characters picked at random among those the validator allows next."""
    text = ""
    for _ in range(steps):
        if state.done:
            break
        allowed = state.first_chars()
        if allowed is None:
            allowed = 'ab é"\\'
        c = rng.choice(allowed)
        nxt = state.feed(c)
        assert nxt is not None, (text, c)
        state, text = nxt, text + c
    return text


@pytest.mark.parametrize("seed", range(40))
def test_random_walks_always_close_to_documents_that_parse_and_validate(seed):
    rng = random.Random(seed)
    schema = PERSON if seed % 2 else None
    start = JSONPrefix.start(compile_schema(schema) if schema else None)
    text = _random_walk(start, rng, rng.randrange(1, 120))
    state = start.feed(text)
    closed = text + state.closing()
    value = json.loads(closed)
    assert isinstance(value, dict)
    if schema:
        jsonschema.validate(value, schema)


def test_first_chars_are_exactly_the_characters_feed_accepts():
    rng = random.Random(7)
    probe = [chr(i) for i in range(32, 127)] + ["\n", "\t", "é"]
    for seed in range(20):
        rng.seed(seed)
        start = JSONPrefix.start(compile_schema(PERSON) if seed % 2 else None)
        state = start.feed(_random_walk(start, rng, rng.randrange(0, 40)))
        allowed = state.first_chars()
        accepted = {c for c in probe if state.feed(c) is not None}
        if allowed is None:
            assert accepted >= {c for c in probe if c not in "\n\t"}
        else:
            assert accepted == set(allowed) & set(probe)


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"type": "string"}, "root"),
        ({"type": "object", "properties": {"a": {"type": "string", "minLength": 1}}}, "minLength"),
        ({"anyOf": [{"type": "object"}]}, "anyOf"),
        ({"type": "object", "$ref": "#"}, "$ref"),
        ({"type": "object", "properties": {"a": {"type": "date"}}}, "type"),
        ({"type": "object", "required": ["a"]}, "required"),
        ({"type": "object", "properties": {"a": {"type": "string", "enum": [1, 2]}}}, "enum"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "additionalProperties"),
        ("not a schema", "schema"),
    ],
)
def test_unsupported_schemas_are_refused_with_the_keyword_named(schema, needle):
    with pytest.raises(UnsupportedSchema, match=needle.replace("$", r"\$")):
        compile_schema(schema)


def test_huge_or_deep_schemas_are_refused():
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(300)}}
    with pytest.raises(UnsupportedSchema, match="subschemas"):
        compile_schema(wide)
    deep: dict = {"type": "object"}
    for _ in range(20):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(UnsupportedSchema, match="deeper"):
        compile_schema(deep)


def test_nesting_is_capped_so_a_model_cannot_nest_forever():
    state = JSONPrefix.start().feed('{"a":' + "[" * 30)
    assert state is not None
    assert state.feed("[" * 10) is None
    assert json.loads('{"a":' + "[" * 30 + state.closing())
