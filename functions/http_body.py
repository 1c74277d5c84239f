"""The JSON body of an HTTP function, parsed defensively: every malformed body is a 400, never a 500.

A caller's body is untrusted. Before anything is decoded it must fit in `MAX_BODY_BYTES` and nest
at most `MAX_DEPTH` levels (the JSON decoder recurses, so a body of ten thousand `[` would
otherwise end in a RecursionError and a 500). The decoded value must be a JSON object whose keys
are all declared fields and whose values have the declared type and shape. Each HTTP function
declares its fields once and gets either the values or a `BadRequest` that says what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flask

MAX_BODY_BYTES = 16 * 1024
"""Far above any documented body (a few short strings), far below what could tie up an instance."""
MAX_DEPTH = 2
"""A documented body is one flat object of strings: the object itself plus one level to spare."""
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class BadRequest(ValueError):
    """The body or one of its fields is malformed. Permanent for this request: answer 400."""


@dataclass(frozen=True)
class TextField:
    """One string field of a body: whether it is required, and what a valid value looks like."""

    name: str
    required: bool = False
    max_length: int = 200
    pattern: re.Pattern[str] | None = None
    """Matched against the whole value (a trailing newline does not pass)."""
    valid: Callable[[str], bool] | None = None
    choices: tuple[str, ...] = ()
    rule: str = ""
    """How the error message states the rule, e.g. `a semantic version such as 1.2.3`."""
    multiline: bool = False
    """Free text (a reason) may hold line breaks; names and versions never do."""

    def check(self, value: object) -> str:
        """The value if it is valid, else BadRequest naming the field and its rule.

        >>> app = TextField("app", pattern=re.compile(r"[a-z]+"), rule="lowercase letters")
        >>> app.check("Hello")
        Traceback (most recent call last):
        ...
        functions.http_body.BadRequest: app: must be lowercase letters
        >>> app.check("hello\\n")
        Traceback (most recent call last):
        ...
        functions.http_body.BadRequest: app: must be one line without control characters
        >>> TextField("reason", multiline=True).check("line one\\nline two")
        'line one\\nline two'
        """
        rule = self.rule or (f"one of {', '.join(self.choices)}" if self.choices else "a string")
        if not isinstance(value, str):
            raise BadRequest(f"{self.name}: must be {rule}, got {_json_type(value)}")
        if len(value) > self.max_length:
            raise BadRequest(f"{self.name}: at most {self.max_length} characters")
        if _CONTROL_CHARACTERS.search(value) or (not self.multiline and ("\n" in value or "\r" in value)):
            lines = "one line" if not self.multiline else "text"
            raise BadRequest(f"{self.name}: must be {lines} without control characters")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise BadRequest(f"{self.name}: must be {rule}")
        if self.valid is not None and not self.valid(value):
            raise BadRequest(f"{self.name}: must be {rule}")
        if self.choices and value not in self.choices:
            raise BadRequest(f"{self.name}: must be {rule}")
        return value


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages.

    >>> [_json_type(v) for v in (None, True, 3, 1.5, "x", [], {})]
    ['null', 'boolean', 'number', 'number', 'string', 'array', 'object']
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text, ignoring brackets inside strings.

    Counted without decoding, so a hostile body cannot exhaust the decoder's recursion first.

    >>> nesting_depth('{"a": "[{[", "b": [1, {"c": []}]}')
    4
    >>> nesting_depth('"\\\\"[["')
    0
    """
    depth = deepest = 0
    in_string = escaped = False
    for character in text:
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"the body holds {name}, which is not JSON")


def decode_json_object(
    raw: bytes, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """A JSON object from raw bytes within the limits, or BadRequest saying which limit it broke.

    >>> decode_json_object(b'{"app": "hello"}')
    {'app': 'hello'}
    >>> decode_json_object(b'{"a": {"b": {}}}')
    Traceback (most recent call last):
    ...
    functions.http_body.BadRequest: the body nests deeper than 2 levels
    >>> decode_json_object(b'["hello"]')
    Traceback (most recent call last):
    ...
    functions.http_body.BadRequest: the body must be a JSON object, got array
    """
    if len(raw) > max_bytes:
        raise BadRequest(f"the body is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # permanent: the client's bytes
        raise BadRequest("the body is not UTF-8") from exc
    if nesting_depth(text) > max_depth:
        raise BadRequest(f"the body nests deeper than {max_depth} levels")
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # permanent: not JSON (also numbers too long to convert)
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {_json_type(body)}")
    return body


def read_body(request: flask.Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The request's bytes, reading at most one byte more than the limit, whatever it claims."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadRequest(f"the body is larger than {max_bytes} bytes")
    return request.stream.read(max_bytes + 1)


def parse_json_body(
    request: flask.Request,
    fields: Sequence[TextField],
    *,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Mapping[str, str | None]:
    """Each declared field's value (None when an optional one is absent or null), or BadRequest.

    The body must be sent as `application/json`; a field that is not declared is refused, so a
    misspelt optional field is not silently ignored.
    """
    if not request.is_json:
        raise BadRequest("send the body as a JSON object with Content-Type: application/json")
    body = decode_json_object(read_body(request, max_bytes), max_bytes=max_bytes, max_depth=max_depth)
    declared = {field.name: field for field in fields}
    unknown = sorted(set(body) - set(declared))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:50]!r}")
    values: dict[str, str | None] = {}
    for field in fields:
        value = body.get(field.name)
        if value is None:
            if field.required:
                raise BadRequest(f"{field.name}: required")
            values[field.name] = None
            continue
        values[field.name] = field.check(value)
    return values
