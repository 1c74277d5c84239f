"""list / aggregatedList: `filter`, `maxResults`, `pageToken` and `orderBy` as Compute Engine reads them."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from .errors import invalid

MAX_RESULTS = 500
# `name = "web-*"`, `status != DONE` (the documented form) and `name eq web-.*` (the older regex form).
_COMPARISON = re.compile(r'^\s*\(?\s*([A-Za-z][A-Za-z0-9_.]*)\s*(=|!=|:|eq|ne)\s*"?([^"]*?)"?\s*\)?\s*$')


def _field(item: Mapping[str, Any], dotted: str) -> Any:
    value: Any = item
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _matcher(expression: str) -> tuple[str, str, re.Pattern[str]]:
    match = _COMPARISON.fullmatch(expression)
    if match is None:
        raise invalid(f"Invalid value for field 'filter': '{expression}'. Invalid list filter expression.")
    field, operator, literal = match.groups()
    if operator in ("eq", "ne"):
        pattern = re.compile(f"(?:{literal})")
        return field, "=" if operator == "eq" else "!=", pattern
    pattern = re.compile(".*".join(re.escape(part) for part in literal.split("*")))
    return field, "!=" if operator == "!=" else "=", pattern


def apply_filter(items: list[dict[str, Any]], expression: str | None) -> list[dict[str, Any]]:
    if not expression or not expression.strip():
        return items
    # Clauses joined by AND, or written side by side in parentheses: `(a = x) (b = y)`.
    clauses = [c for c in re.split(r"\s+AND\s+|\)\s*\(", expression.strip()) if c.strip()]
    matchers = [_matcher(clause) for clause in clauses]

    def keep(item: dict[str, Any]) -> bool:
        for field, operator, pattern in matchers:
            value = _field(item, field)
            text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            hit = pattern.fullmatch(text) is not None
            if hit != (operator == "="):
                return False
        return True

    return [item for item in items if keep(item)]


def apply_order(items: list[dict[str, Any]], order_by: str | None) -> list[dict[str, Any]]:
    if not order_by:
        return items
    parts = order_by.split()
    if (
        parts[0] not in ("name", "creationTimestamp")
        or len(parts) > 2
        or parts[1:] not in ([], ["desc"], ["asc"])
    ):
        raise invalid(
            f"Invalid value for field 'orderBy': '{order_by}'. Sorting by name or creationTimestamp only."
        )
    return sorted(items, key=lambda item: str(item.get(parts[0], "")), reverse=parts[1:] == ["desc"])


def page(items: list[dict[str, Any]], query: Mapping[str, str]) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `items` after filter and order, and the token of the next page (if any)."""
    try:
        limit = int(query.get("maxResults", MAX_RESULTS))
    except ValueError as exc:
        raise invalid(f"Invalid value for field 'maxResults': '{query.get('maxResults')}'.") from exc
    if not 0 <= limit <= MAX_RESULTS:
        raise invalid(f"Invalid value for field 'maxResults': '{limit}'. Must be in the range [0, 500].")
    if limit == 0:
        limit = MAX_RESULTS
    start = 0
    token = query.get("pageToken")
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"Invalid value for field 'pageToken': '{token}'.") from exc
    selected = apply_order(apply_filter(items, query.get("filter")), query.get("orderBy"))
    chunk = selected[start : start + limit]
    next_start = start + limit
    next_token = (
        base64.urlsafe_b64encode(str(next_start).encode()).decode() if next_start < len(selected) else None
    )
    return chunk, next_token


def list_body(
    kind: str, list_id: str, self_link: str, items: list[dict[str, Any]], query: Mapping[str, str]
) -> dict[str, Any]:
    chunk, next_token = page(items, query)
    body: dict[str, Any] = {"kind": kind, "id": list_id, "selfLink": self_link, "items": chunk}
    if next_token:
        body["nextPageToken"] = next_token
    return body


def aggregated_body(
    kind: str,
    list_id: str,
    self_link: str,
    collection: str,
    scoped: list[tuple[str, dict[str, Any]]],
    query: Mapping[str, str],
) -> dict[str, Any]:
    """`scoped` pairs each item with its scope key ("global", "zones/x", "regions/y")."""
    scope_of = {id(item): scope for scope, item in scoped}
    chunk, next_token = page([item for _, item in scoped], query)
    grouped: dict[str, dict[str, Any]] = {}
    for item in chunk:
        grouped.setdefault(scope_of[id(item)], {collection: []})[collection].append(item)
    body: dict[str, Any] = {"kind": kind, "id": list_id, "selfLink": self_link, "items": grouped}
    if next_token:
        body["nextPageToken"] = next_token
    return body
