"""An incremental validator for prefixes of JSON text, optionally of one JSON Schema (a subset).

Pure Python, no torch: the runtime imports it to check a `response_format` before a request
reaches the engine; the engine uses it for constrained decoding (gpt_model.constrained).

`JSONPrefix.start(schema)` is the empty document. `state.feed(text)` returns the state after
`text`, or None when no valid document starts with what was fed so far. `state.done` is True
once a whole document has been read, and `state.closing()` is a short text that completes the
document from here (a decoder forced to stop appends it).

The schema subset (anything else is refused by `compile_schema` with UnsupportedSchema):
  type: object | array | string | number | integer | boolean | null, or a list of them;
  object: properties, required, additionalProperties (generation only ever writes declared
  properties, so the output also fits `additionalProperties: false`);
  array: items;  any type: enum, const;  annotations: title, description, default, examples,
  $schema, $comment, strict (ignored).  The root must be an object.
Accepted text is narrower than JSON in a few ways: whitespace outside strings comes in runs of at
most MAX_WHITESPACE characters (none before the root), objects and arrays nest at most MAX_DEPTH
deep, numbers have at most MAX_NUMBER_CHARS characters and two exponent digits, and keys of
declared properties are written as json.dumps writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_WHITESPACE = 8
MAX_DEPTH = 32  # objects and arrays nested at most this deep (a random model could nest forever)
MAX_NUMBER_CHARS = 24
MAX_SCHEMA_NODES = 256
MAX_SCHEMA_DEPTH = 12
MAX_ENUM = 256
WHITESPACE = " \n\t"
DIGITS = "0123456789"
HEX = "0123456789abcdefABCDEF"
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$comment", "strict", "$id"}
KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "const"} | ANNOTATIONS


class UnsupportedSchema(ValueError):
    """The schema uses a keyword or form this validator does not support (message names it)."""


@dataclass(eq=False)
class Node:
    """One compiled schema: what a value at this place may be."""

    types: frozenset[str] = frozenset(TYPES)
    properties: dict[str, Node] | None = None  # None: any keys, any values
    keys: dict[str, str] = field(default_factory=dict)  # property name -> its JSON text between the quotes
    required: tuple[str, ...] = ()
    items: Node | None = None  # None: any values
    enum: tuple[str, ...] | None = None  # the allowed values as compact JSON texts

    def child(self, key: str | None) -> Node:
        if self.properties is None or key is None:
            return ANY
        return self.properties[key]


ANY = Node()
ANY_OBJECT = Node(types=frozenset({"object"}))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def compile_schema(schema: Any) -> Node:
    """A JSON Schema (a dict) compiled for validation; UnsupportedSchema names what is not supported."""
    count = [0]

    def walk(s: Any, path: str, depth: int) -> Node:
        count[0] += 1
        if count[0] > MAX_SCHEMA_NODES:
            raise UnsupportedSchema(f"the schema has more than {MAX_SCHEMA_NODES} subschemas")
        if depth > MAX_SCHEMA_DEPTH:
            raise UnsupportedSchema(f"{path}: the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        if s is True or s == {}:
            return ANY
        if not isinstance(s, dict):
            raise UnsupportedSchema(f"{path}: a schema must be an object")
        unknown = sorted(set(s) - KEYWORDS)
        if unknown:
            raise UnsupportedSchema(f"{path}: the keyword {unknown[0]!r} is not supported")
        node = Node()
        if "type" in s:
            kinds = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not kinds or any(k not in TYPES for k in kinds):
                raise UnsupportedSchema(f"{path}.type: must be one of {', '.join(TYPES)} or a list of them")
            node.types = frozenset(kinds)
        values = None
        if "const" in s:
            values = [s["const"]]
        if "enum" in s:
            if not isinstance(s["enum"], list) or not s["enum"] or len(s["enum"]) > MAX_ENUM:
                raise UnsupportedSchema(f"{path}.enum: must be a list of 1 to {MAX_ENUM} values")
            values = s["enum"] if values is None else [v for v in values if v in s["enum"]]
        if values is not None:
            texts = tuple(dict.fromkeys(_dumps(v) for v in values if _type_of(v) in _widen(node.types)))
            if not texts:
                raise UnsupportedSchema(f"{path}: no value of enum/const has the schema's type")
            node.enum = texts
            return node
        if "properties" in s or "required" in s:
            props = s.get("properties", {})
            if not isinstance(props, dict):
                raise UnsupportedSchema(f"{path}.properties: must be an object")
            node.properties = {k: walk(v, f"{path}.properties.{k}", depth + 1) for k, v in props.items()}
            node.keys = {k: _dumps(k)[1:-1] for k in props}
            required = s.get("required", [])
            if not isinstance(required, list) or not all(isinstance(r, str) and r in props for r in required):
                raise UnsupportedSchema(f"{path}.required: must list declared properties")
            node.required = tuple(dict.fromkeys(required))
        additional = s.get("additionalProperties", True)
        if not isinstance(additional, bool):
            raise UnsupportedSchema(f"{path}.additionalProperties: only true or false is supported")
        if "items" in s:
            node.items = walk(s["items"], f"{path}.items", depth + 1)
        return node

    root = walk(schema, "schema", 0)
    if root.types != frozenset({"object"}) or root.enum is not None:
        raise UnsupportedSchema('schema: the root must be {"type": "object", ...}')
    return root


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _widen(types: frozenset[str]) -> frozenset[str]:
    return types | {"integer"} if "number" in types else types


def minimal(node: Node) -> str:
    """The shortest text this validator accepts for a value of `node`."""
    if node.enum is not None:
        return min(node.enum, key=len)
    options = []
    t = node.types
    if "integer" in t or "number" in t:
        options.append("0")
    if "string" in t:
        options.append('""')
    if "null" in t:
        options.append("null")
    if "boolean" in t:
        options.append("false")
    if "array" in t:
        options.append("[]")
    if "object" in t:
        if node.properties is None:
            options.append("{}")
        else:
            body = ",".join(f'"{node.keys[k]}":{minimal(node.properties[k])}' for k in node.required)
            options.append("{" + body + "}")
    return min(options, key=len)


# Frames of the parser's stack (tuples, so states are cheap to copy and hashable):
#   ("V", node, ws)                 a value is expected
#   ("O", node, seen, phase, ws, key)  in an object; phase 0 after "{", 1 after ",", 2 after `key`, 3 after a value
#   ("K", node, buf, esc)           in a key (esc: 0, -1 after a backslash, n hex digits still due)
#   ("S", esc)                      in a string value
#   ("N", integer_only, dfa, n, e)  in a number of n characters, e of them exponent digits
#   ("L", rest)                     in true/false/null
#   ("E", options, buf)             in a value that must be one of `options` (JSON texts)
#   ("A", node, phase, ws)          in an array; phase 0 after "[", 1 after ",", 3 after a value
Frame = tuple
Stack = tuple[Frame, ...]

# number DFA: 0 start, 1 "-", 2 "0", 3 integer digits, 4 ".", 5 fraction, 6 "e", 7 exponent sign, 8 exponent
_NUM_ACCEPT = frozenset({2, 3, 5, 8})


def _num_next(state: int, c: str, integer_only: bool) -> int:
    """The DFA state after `c`, or -1."""
    if state == 0:
        return 1 if c == "-" else 2 if c == "0" else 3 if c in DIGITS else -1
    if state == 1:
        return 2 if c == "0" else 3 if c in DIGITS else -1
    if state in (2, 3, 5):
        if c in DIGITS and state != 2:
            return state
        if integer_only:
            return -1
        if c == "." and state != 5:
            return 4
        return 6 if c in "eE" else -1
    if state == 4:
        return 5 if c in DIGITS else -1
    if state == 6:
        return 7 if c in "+-" else 8 if c in DIGITS else -1
    return 8 if c in DIGITS else -1  # states 7 and 8


def _step_escape(esc: int, c: str) -> int | None:
    """The escape state after `c`, when esc != 0."""
    if esc == -1:
        if c == "u":
            return 4
        return 0 if c in '"\\/bfnrt' else None
    return esc - 1 if c in HEX else None


def _value_start(node: Node, c: str) -> Frame | None:
    if node.enum is not None:
        options = tuple(o for o in node.enum if o[0] == c)
        return ("E", options, c) if options else None
    t = node.types
    if c == '"':
        return ("S", 0) if "string" in t else None
    if c == "{":
        return ("O", node, frozenset(), 0, 0, None) if "object" in t else None
    if c == "[":
        return ("A", node, 0, 0) if "array" in t else None
    if c == "-" or c in DIGITS:
        if "number" in t or "integer" in t:
            integer_only = "number" not in t
            return ("N", integer_only, _num_next(0, c, integer_only), 1, 0)
        return None
    if c == "t" or c == "f":
        return ("L", "rue" if c == "t" else "alse") if "boolean" in t else None
    if c == "n":
        return ("L", "ull") if "null" in t else None
    return None


def _keys_left(node: Node, seen: frozenset[str]) -> bool:
    return node.properties is None or len(seen) < len(node.properties)


def _step(stack: Stack, c: str) -> Stack | None:
    """The stack after one more character, or None."""
    while True:
        if not stack:
            return None  # nothing may follow a complete document
        top = stack[-1]
        kind = top[0]
        if kind == "S":
            esc = top[1]
            if esc == 0:
                if c == '"':
                    return stack[:-1]
                if c == "\\":
                    return (*stack[:-1], ("S", -1))
                return stack if c >= " " else None
            nxt = _step_escape(esc, c)
            return None if nxt is None else (*stack[:-1], ("S", nxt))
        if kind == "V":
            node, ws = top[1], top[2]
            if c in WHITESPACE:
                return (*stack[:-1], ("V", node, ws + 1)) if ws < MAX_WHITESPACE else None
            frame = _value_start(node, c)
            if frame is None or (frame[0] in ("O", "A") and len(stack) > MAX_DEPTH):
                return None
            return (*stack[:-1], frame)
        if kind == "N":
            integer_only, state, n, exp = top[1], top[2], top[3], top[4]
            nxt = _num_next(state, c, integer_only) if n < MAX_NUMBER_CHARS else -1
            if nxt == 8:
                exp += 1
            if nxt >= 0 and exp <= 2:
                return (*stack[:-1], ("N", integer_only, nxt, n + 1, exp))
            if state not in _NUM_ACCEPT:
                return None
            stack = stack[:-1]  # the number ended; the character belongs to what follows
            continue
        if kind == "L":
            rest = top[1]
            if c != rest[0]:
                return None
            return stack[:-1] if len(rest) == 1 else (*stack[:-1], ("L", rest[1:]))
        if kind == "E":
            options, buf = top[1], top[2] + c
            left = tuple(o for o in options if o.startswith(buf))
            if left:
                return (*stack[:-1], ("E", left, buf))
            if top[2] not in options:
                return None
            stack = stack[:-1]
            continue
        if kind == "O":
            node, seen, phase, ws, key = top[1:]
            if c in WHITESPACE:
                return (*stack[:-1], ("O", node, seen, phase, ws + 1, key)) if ws < MAX_WHITESPACE else None
            if phase in (0, 1) and c == '"':
                if not _keys_left(node, seen):
                    return None
                return (*stack[:-1], ("O", node, seen, phase, 0, None), ("K", node, "", 0))
            if phase == 2:
                if c != ":":
                    return None
                return (*stack[:-1], ("O", node, seen, 3, 0, None), ("V", node.child(key), 0))
            if c == "}" and phase in (0, 3):
                return stack[:-1] if all(r in seen for r in node.required) else None
            if c == "," and phase == 3:
                return (*stack[:-1], ("O", node, seen, 1, 0, None)) if _keys_left(node, seen) else None
            return None
        if kind == "K":
            return _step_key(stack, top, c)
        if kind == "A":
            node, phase, ws = top[1], top[2], top[3]
            if c in WHITESPACE:
                return (*stack[:-1], ("A", node, phase, ws + 1)) if ws < MAX_WHITESPACE else None
            if c == "]" and phase in (0, 3):
                return stack[:-1]
            if c == "," and phase == 3:
                return (*stack[:-1], ("A", node, 1, 0))
            if phase in (0, 1):
                frame = _value_start(node.items or ANY, c)
                if frame is None or (frame[0] in ("O", "A") and len(stack) >= MAX_DEPTH):
                    return None
                return (*stack[:-1], ("A", node, 3, 0), frame)
            return None
        raise AssertionError(kind)


def _step_key(stack: Stack, top: Frame, c: str) -> Stack | None:
    node, buf, esc = top[1], top[2], top[3]
    parent = stack[-2]
    seen = parent[2]
    if node.properties is None:  # any key: a plain JSON string
        if esc:
            nxt = _step_escape(esc, c)
            return None if nxt is None else (*stack[:-1], ("K", node, "", nxt))
        if c == '"':
            return (*stack[:-2], ("O", node, seen, 2, 0, None))
        if c == "\\":
            return (*stack[:-1], ("K", node, "", -1))
        return stack if c >= " " else None
    nbuf = buf + c
    for name, text in node.keys.items():
        if name not in seen and text.startswith(nbuf):
            return (*stack[:-1], ("K", node, nbuf, 0))
    if c == '"':
        for name, text in node.keys.items():
            if name not in seen and text == buf:
                return (*stack[:-2], ("O", node, seen | {name}, 2, 0, name))
    return None


def _closing_chunk(stack: Stack) -> tuple[str, Stack]:
    """A short text that moves toward a complete document, and the stack after it."""
    top = stack[-1]
    kind = top[0]
    if kind == "S":
        esc = top[1]
        text = ("n" if esc == -1 else "0" * esc if esc > 0 else "") + '"'
    elif kind == "V":
        text = minimal(top[1])
    elif kind == "N":
        if top[2] in _NUM_ACCEPT:
            return "", stack[:-1]
        text = "0"
    elif kind == "L":
        text = top[1]
    elif kind == "E":
        if top[2] in top[1]:
            return "", stack[:-1]
        text = min(top[1], key=len)[len(top[2]) :]
    elif kind == "O":
        node, seen, phase = top[1], top[2], top[3]
        if phase == 2:
            text = ":"
        else:
            missing = [r for r in node.required if r not in seen]
            if phase == 3:
                text = "," if missing else "}"
            elif missing:
                text = f'"{node.keys[missing[0]]}"'
            elif phase == 0:
                text = "}"
            else:  # after ",": some key must follow
                free = [k for k in (node.properties or {}) if k not in seen]
                text = f'"{node.keys[free[0]]}"' if free else '""'
    elif kind == "K":
        node, buf, esc = top[1], top[2], top[3]
        if node.properties is None:
            text = ("n" if esc == -1 else "0" * esc if esc > 0 else "") + '"'
        else:
            seen = stack[-2][2]
            names = [k for k in node.required if k not in seen] + [k for k in node.keys if k not in seen]
            name = next(k for k in names if node.keys[k].startswith(buf))
            text = node.keys[name][len(buf) :] + '"'
    else:  # "A"
        phase = top[2]
        text = minimal(top[1].items or ANY) if phase == 1 else "]"
    after = _feed(stack, text)
    assert after is not None, (stack, text)
    return text, after


def _feed(stack: Stack, text: str) -> Stack | None:
    for c in text:
        after = _step(stack, c)
        if after is None:
            return None
        stack = after
    return stack


class _Closings:
    """Memoised closing texts of one request's states (states repeat a lot: every character of a string)."""

    def __init__(self) -> None:
        self.texts: dict[Stack, str] = {}

    def get(self, stack: Stack) -> str:
        text = self.texts.get(stack)
        if text is None:
            parts = []
            s = stack
            while s:
                chunk, s = _closing_chunk(s)
                parts.append(chunk)
            text = "".join(parts)
            if len(self.texts) > 20_000:
                self.texts.clear()
            self.texts[stack] = text
        return text


@dataclass(frozen=True, eq=False)
class JSONPrefix:
    """The state after some text: every valid document that starts with it is still reachable."""

    stack: Stack
    closings: _Closings = field(default_factory=_Closings, repr=False)

    @classmethod
    def start(cls, schema: Node | None = None) -> JSONPrefix:
        """The empty document; `schema` None means any JSON object (OpenAI's json_object mode).

        The root value starts at once: no whitespace before it."""
        return cls((("V", schema or ANY_OBJECT, MAX_WHITESPACE),))

    def feed(self, text: str) -> JSONPrefix | None:
        """The state after `text`, or None when no valid document starts with what was read."""
        stack = _feed(self.stack, text)
        return None if stack is None else JSONPrefix(stack, self.closings)

    @property
    def done(self) -> bool:
        """A whole document has been read (the root is an object, so nothing may follow)."""
        return not self.stack

    def closing(self) -> str:
        """A text that completes the document from here ("" when done)."""
        return self.closings.get(self.stack)

    def first_chars(self) -> str | None:
        """The characters that may come next, or None when any character from U+0020 up may (a string)."""
        return _first_chars(self.stack)


_PROBE = WHITESPACE + '"{}[],:-0123456789.eE+tfnrulasb\\/u' + "abcdefABCDEF"


def _first_chars(stack: Stack) -> str | None:
    if not stack:
        return ""
    top = stack[-1]
    if (top[0] == "S" and top[1] == 0) or (top[0] == "K" and top[1].properties is None and top[3] == 0):
        return None
    extra = ""
    if top[0] == "K":  # declared keys: the next characters of the keys still possible
        extra = "".join({text[len(top[2])] for text in top[1].keys.values() if len(text) > len(top[2])})
    elif top[0] == "E":
        extra = "".join({o[len(top[2])] for o in top[1] if len(o) > len(top[2])})
    return "".join(c for c in dict.fromkeys(_PROBE + extra) if _step(stack, c) is not None)
