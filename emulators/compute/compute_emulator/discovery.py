"""Checks a JSON answer against a Google API discovery document, field by field.

The discovery documents (`compute.v1`, `monitoring.v3`, ...) ship with `google-api-python-client`;
they are the published schema of every request and response. `problems(...)` lists what in an
answer the schema does not allow: a field it does not declare, a value of the wrong JSON type, a
string outside its enum. An empty list means the answer is valid. Used by the emulator's tests
for both the Compute and the Monitoring API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

_INTEGER_STRING = re.compile(r"^-?\d+$")
_STRING_INTEGER_FORMATS = {"int64", "uint64"}


@cache
def discovery_document(api: str) -> Mapping[str, Any]:
    """The discovery document `api` (e.g. "compute.v1") shipped with google-api-python-client."""
    documents = resources.files("googleapiclient.discovery_cache") / "documents"
    document: Mapping[str, Any] = json.loads((documents / f"{api}.json").read_text(encoding="utf-8"))
    return document


@dataclass(frozen=True)
class Method:
    """One REST method of a discovery document: its id, HTTP method, path pattern and response."""

    id: str
    http_method: str
    path: str
    """Relative to the API's root, e.g. `projects/{project}/global/backendServices/{backendService}`."""
    response: str | None

    def matches(self, http_method: str, path: str) -> bool:
        """Whether a request (path relative to the root) is this method.

        >>> m = Method("x.get", "GET", "projects/{project}/zones/{zone}", "Zone")
        >>> m.matches("GET", "projects/p/zones/us-central1-a"), m.matches("GET", "projects/p/zones")
        (True, False)
        """
        if http_method.upper() != self.http_method:
            return False
        pattern = re.sub(r"\\\{(?:\\\+)?[A-Za-z_]+\\\}", "[^/]+", re.escape(self.path))
        return re.fullmatch(pattern, path) is not None


def methods(document: Mapping[str, Any]) -> list[Method]:
    """Every method of the document, nested resources included."""

    def walk(resource_map: Mapping[str, Any]) -> Iterator[Method]:
        for resource in resource_map.values():
            for method in resource.get("methods", {}).values():
                response = method.get("response", {}).get("$ref")
                path = method.get("flatPath") or method["path"]
                yield Method(method["id"], method["httpMethod"], path, response)
            yield from walk(resource.get("resources", {}))

    return list(walk(document.get("resources", {})))


def method_for(document: Mapping[str, Any], http_method: str, path: str) -> Method | None:
    """The method a request is, preferring literal path segments over parameters."""
    found = [m for m in methods(document) if m.matches(http_method, path)]
    found.sort(key=lambda m: m.path.count("{"))
    return found[0] if found else None


def problems(document: Mapping[str, Any], schema: str, value: Any) -> list[str]:
    """Where `value` breaks the document's schema `schema`; `[]` when it is valid.

    >>> doc = {"schemas": {"S": {"type": "object", "properties": {
    ...     "n": {"type": "integer", "format": "int32"}, "id": {"type": "string", "format": "uint64"},
    ...     "state": {"type": "string", "enum": ["UP", "DOWN"]}}}}}
    >>> problems(doc, "S", {"n": 1, "id": "12", "state": "UP"})
    []
    >>> for problem in problems(doc, "S", {"n": "1", "id": 12, "state": "SIDEWAYS", "extra": True}):
    ...     print(problem)
    S.n: expected integer, got '1'
    S.id: expected a decimal string (uint64), got 12
    S.state: 'SIDEWAYS' is not one of ['UP', 'DOWN']
    S.extra: unknown field
    """
    found: list[str] = []
    _check(document, {"$ref": schema}, value, schema, found)
    return found


def _check(
    document: Mapping[str, Any], spec: Mapping[str, Any], value: Any, where: str, found: list[str]
) -> None:
    if "$ref" in spec:
        spec = document["schemas"][spec["$ref"]]
    kind = spec.get("type")
    if kind == "any" or (kind is None and "properties" not in spec):
        return
    if kind == "object" or kind is None:
        if not isinstance(value, dict):
            found.append(f"{where}: expected an object, got {value!r}")
            return
        properties = spec.get("properties", {})
        extra = spec.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                _check(document, properties[key], item, f"{where}.{key}", found)
            elif extra is not None:
                _check(document, extra, item, f"{where}[{key!r}]", found)
            else:
                found.append(f"{where}.{key}: unknown field")
    elif kind == "array":
        if not isinstance(value, list):
            found.append(f"{where}: expected a list, got {value!r}")
            return
        for index, item in enumerate(value):
            _check(document, spec["items"], item, f"{where}[{index}]", found)
    elif kind == "string":
        fmt = spec.get("format")
        if fmt in _STRING_INTEGER_FORMATS:
            if not isinstance(value, str) or not _INTEGER_STRING.match(value):
                found.append(f"{where}: expected a decimal string ({fmt}), got {value!r}")
            return
        if not isinstance(value, str):
            found.append(f"{where}: expected a string, got {value!r}")
            return
        if "enum" in spec and value not in spec["enum"]:
            found.append(f"{where}: {value!r} is not one of {spec['enum']}")
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            found.append(f"{where}: expected integer, got {value!r}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            found.append(f"{where}: expected number, got {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            found.append(f"{where}: expected boolean, got {value!r}")
    else:
        found.append(f"{where}: the schema has an unknown type {kind!r}")
