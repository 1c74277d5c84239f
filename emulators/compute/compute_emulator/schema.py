"""Checks a request body against the Compute Engine v1 schema.

The schema comes from the message descriptors the Compute client library is generated from, so
"unknown field" and "wrong type" answers match the published API without a hand-kept copy.
"""

from __future__ import annotations

import json
from typing import Any

from google.cloud.compute_v1 import types as compute_types
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from .errors import ApiError, invalid

_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}


def parse_json_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "parseError", f"Invalid JSON payload received. {exc}") from exc


def check_body(body: Any, message_name: str) -> dict[str, Any]:
    """Return `body` if it is a JSON object matching the API message `message_name`."""
    if body is None:
        raise ApiError(400, "required", "Required field 'resource' not specified")
    descriptor: Descriptor = getattr(compute_types, message_name).pb().DESCRIPTOR
    if not isinstance(body, dict):
        raise ApiError(400, "parseError", "Invalid JSON payload received. Expected an object.")
    _check_message(body, descriptor, "resource")
    return body


def _check_message(value: dict[str, Any], descriptor: Descriptor, where: str) -> None:
    by_json_name = {field.json_name: field for field in descriptor.fields}
    by_name = {field.name: field for field in descriptor.fields}
    for key, item in value.items():
        field = by_json_name.get(key) or by_name.get(key)
        if field is None:
            raise invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
            )
        _check_field(item, field, f"{where}.{key}")


def _check_field(value: Any, field: FieldDescriptor, where: str) -> None:
    if value is None:
        return
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    if is_map:
        if not isinstance(value, dict):
            raise invalid(f"Invalid value at '{where}': expected an object.")
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            _check_single(item, value_field, f"{where}[{key}]")
        return
    if field.is_repeated:
        if not isinstance(value, list):
            raise invalid(f"Invalid value at '{where}': expected a list.")
        for index, item in enumerate(value):
            _check_single(item, field, f"{where}[{index}]")
        return
    _check_single(value, field, where)


def _check_single(value: Any, field: FieldDescriptor, where: str) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        if not isinstance(value, dict):
            raise invalid(f"Invalid value at '{where}': expected an object.")
        _check_message(value, field.message_type, where)
    elif kind == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise invalid(f"Invalid value at '{where}' ({type(value).__name__}): expected a string.")
    elif kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise invalid(f"Invalid value at '{where}' ({value!r}): expected a boolean.")
    elif kind in _INTEGER_TYPES:
        # Proto JSON writes 64-bit integers as strings.
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())
        ):
            raise invalid(f"Invalid value at '{where}' ({value!r}): expected an integer.")
    elif kind in _FLOAT_TYPES and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise invalid(f"Invalid value at '{where}' ({value!r}): expected a number.")
