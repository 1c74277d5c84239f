"""A Cloud Monitoring emulator for one metric: the load balancers' request counts.

Cloud Load Balancing reports `loadbalancing.googleapis.com/https/backend_request_count` (a DELTA
INT64 metric on the `https_lb_rule` resource, labelled with the backend group and the response
code). The emulator's load balancers count what they answer the same way, and
`GET /v3/projects/{project}/timeSeries` (`projects.timeSeries.list`) serves those counts in the
shape of the `monitoring.v3` API, so an unchanged REST client of that API (the pipeline uses
`google-api-python-client`, built from the published `monitoring.v3` discovery document) reads
them as it would read Cloud Monitoring.

Supported: a filter of `key = "value"` clauses joined by AND on `metric.type`, `resource.type`,
`resource.label(s).*` and `metric.label(s).*`; `interval.startTime` / `interval.endTime`;
`aggregation.alignmentPeriod` with `perSeriesAligner` ALIGN_NONE, ALIGN_DELTA or ALIGN_SUM and
`crossSeriesReducer` REDUCE_NONE or REDUCE_SUM over `groupByFields`; `view` FULL or HEADERS;
`pageSize` / `pageToken`. Anything else is a 400 naming it, never a silently different answer.
Counts are kept per second, so a window is resolved to whole seconds.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

REQUEST_COUNT_METRIC = "loadbalancing.googleapis.com/https/backend_request_count"
RESOURCE_TYPE = "https_lb_rule"
RETENTION_SECONDS = 24 * 3600
"""Counts older than this are forgotten (Cloud Monitoring keeps six weeks; a local stack lives hours)."""
MAX_PAGE_SIZE = 100_000

_ALIGNERS = {"ALIGN_NONE": "ALIGN_NONE", "0": "ALIGN_NONE", "ALIGN_DELTA": "ALIGN_DELTA", "1": "ALIGN_DELTA"}
_ALIGNERS |= {"ALIGN_SUM": "ALIGN_SUM", "14": "ALIGN_SUM"}
_REDUCERS = {"REDUCE_NONE": "REDUCE_NONE", "0": "REDUCE_NONE", "REDUCE_SUM": "REDUCE_SUM", "2": "REDUCE_SUM"}
_VIEWS = {"FULL": "FULL", "0": "FULL", "HEADERS": "HEADERS", "1": "HEADERS"}
# Enum values arrive by name, or by number from clients that encode enums as integers.
_CLAUSE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*$')
_DURATION = re.compile(r"^(\d+(?:\.\d{1,9})?)s$")


class MonitoringError(Exception):
    """A request the Monitoring API refuses, rendered as Google's JSON error."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def _invalid(message: str) -> MonitoringError:
    return MonitoringError(400, "INVALID_ARGUMENT", message)


@dataclass(frozen=True)
class SeriesKey:
    """One time series: which load balancer answered, through which group, with which code."""

    project: str
    backend_service: str
    group_path: str | None
    """`projects/P/zones/Z/instanceGroups/N` (or regions/...); None when no backend was selected."""
    response_code: int

    def resource_labels(self) -> dict[str, str]:
        if self.group_path is None:
            backend_name, scope, scope_type, backend_type = "", "", "", "NO_BACKEND_SELECTED"
        else:
            parts = self.group_path.split("/")
            backend_name, scope = parts[-1], parts[3]
            scope_type = "ZONE" if parts[2] == "zones" else "REGION"
            backend_type = "INSTANCE_GROUP"
        return {
            "project_id": self.project,
            "region": "global",
            "url_map_name": self.backend_service,
            "target_proxy_name": self.backend_service,
            "forwarding_rule_name": self.backend_service,
            "matched_url_path_rule": "UNMATCHED",
            "backend_target_name": self.backend_service,
            "backend_target_type": "BACKEND_SERVICE",
            "backend_name": backend_name,
            "backend_type": backend_type,
            "backend_scope": scope,
            "backend_scope_type": scope_type,
        }

    def metric_labels(self) -> dict[str, str]:
        return {
            "response_code": str(self.response_code),
            "response_code_class": str(self.response_code // 100 * 100),
            "protocol": "HTTP/1.1",
            "proxy_continent": "America",
            "cache_result": "DISABLED",
        }


class RequestCounts:
    """Requests answered by every load balancer, per series and per second of the wall clock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[SeriesKey, dict[int, int]] = {}
        self._last_prune = 0

    def record(self, project: str, backend_service: str, group_path: str | None, response_code: int) -> None:
        now = int(self._clock())
        key = SeriesKey(project, backend_service, group_path, response_code)
        series = self._buckets.setdefault(key, {})
        series[now] = series.get(now, 0) + 1
        if now - self._last_prune > 60:
            self._prune(now - RETENTION_SECONDS)
            self._last_prune = now

    def _prune(self, oldest: int) -> None:
        for series in self._buckets.values():
            for second in [s for s in series if s < oldest]:
                del series[second]

    def series(self, project: str) -> Iterable[tuple[SeriesKey, Mapping[int, int]]]:
        return [(key, buckets) for key, buckets in self._buckets.items() if key.project == project]


# -- the request ---------------------------------------------------------------------------


def _time(value: str, where: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:  # permanent: the caller's time is malformed (a 400)
        raise _invalid(f"Invalid value at '{where}' ({value!r}): not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise _invalid(f"Invalid value at '{where}' ({value!r}): the time needs an offset or Z")
    return parsed.timestamp()


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_filter(text: str) -> dict[str, str]:
    """The filter's `key = "value"` clauses, keyed by a canonical name (`resource.label.x`).

    >>> parse_filter('metric.type = "a/b" AND resource.labels.backend_name = "g"')
    {'metric.type': 'a/b', 'resource.label.backend_name': 'g'}
    """
    clauses: dict[str, str] = {}
    for part in re.split(r"\s+AND\s+", text.strip()):
        match = _CLAUSE.match(part)
        if match is None:
            raise _invalid(
                f'The filter clause {part!r} is not supported by the emulator (key = "value" only)'
            )
        key, value = match.group(1), match.group(2).replace('\\"', '"')
        key = key.replace(".labels.", ".label.")
        if key not in ("metric.type", "resource.type") and not key.startswith(
            ("metric.label.", "resource.label.")
        ):
            raise _invalid(f"The filter key {key!r} is not supported by the emulator")
        clauses[key] = value
    if "metric.type" not in clauses:
        raise _invalid("The filter must name a metric.type")
    return clauses


def _duration(value: str, where: str) -> float:
    match = _DURATION.match(value)
    if match is None or float(match.group(1)) <= 0:
        raise _invalid(f"Invalid value at '{where}' ({value!r}): a positive duration such as \"60s\"")
    return float(match.group(1))


def _enum(query: Mapping[str, str], name: str, values: Mapping[str, str], default: str) -> str:
    raw = query.get(name)
    if raw is None:
        return default
    if raw not in values:
        raise _invalid(f"The value {raw!r} of '{name}' is not supported by the emulator")
    return values[raw]


@dataclass(frozen=True)
class ListRequest:
    clauses: Mapping[str, str]
    start: float
    end: float
    alignment_period: float | None
    aligner: str
    reducer: str
    group_by: tuple[str, ...]
    view: str
    page_size: int
    page_offset: int

    @classmethod
    def from_query(cls, query: Mapping[str, str], group_by: list[str]) -> ListRequest:
        known = {
            "filter",
            "interval.startTime",
            "interval.endTime",
            "aggregation.alignmentPeriod",
            "aggregation.perSeriesAligner",
            "aggregation.crossSeriesReducer",
            "aggregation.groupByFields",
            "view",
            "pageSize",
            "pageToken",
            "$alt",
            "alt",
        }
        unknown = sorted(set(query) - known)
        if unknown:
            raise _invalid(f"The query parameter {unknown[0]!r} is not supported by the emulator")
        if "filter" not in query:
            raise _invalid("The request is missing the required field 'filter'")
        if "interval.endTime" not in query:
            raise _invalid("The request is missing the required field 'interval.endTime'")
        end = _time(query["interval.endTime"], "interval.endTime")
        start = (
            _time(query["interval.startTime"], "interval.startTime") if "interval.startTime" in query else end
        )
        if start > end:
            raise _invalid("The interval's startTime is after its endTime")
        period = query.get("aggregation.alignmentPeriod")
        aligner = _enum(query, "aggregation.perSeriesAligner", _ALIGNERS, "ALIGN_NONE")
        reducer = _enum(query, "aggregation.crossSeriesReducer", _REDUCERS, "REDUCE_NONE")
        if reducer != "REDUCE_NONE" and aligner == "ALIGN_NONE":
            raise _invalid("A cross-series reducer needs a per-series aligner")
        if aligner != "ALIGN_NONE" and period is None:
            raise _invalid("The aligner needs 'aggregation.alignmentPeriod'")
        for field in group_by:
            if not field.startswith(
                ("metric.label.", "resource.label.", "metric.labels.", "resource.labels.")
            ):
                raise _invalid(f"The group-by field {field!r} is not supported by the emulator")
        try:
            page_size = int(query.get("pageSize", "0") or 0)
            page_offset = int(query.get("pageToken", "0") or 0)
        except ValueError as exc:  # permanent: not numbers (a 400)
            raise _invalid("pageSize and pageToken must be numbers") from exc
        if page_size < 0 or page_offset < 0:
            raise _invalid("pageSize and pageToken must not be negative")
        return cls(
            clauses=parse_filter(query["filter"]),
            start=start,
            end=end,
            alignment_period=_duration(period, "aggregation.alignmentPeriod") if period else None,
            aligner=aligner,
            reducer=reducer,
            group_by=tuple(f.replace(".labels.", ".label.") for f in group_by),
            view=_enum(query, "view", _VIEWS, "FULL"),
            page_size=min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE),
            page_offset=page_offset,
        )


# -- the answer ----------------------------------------------------------------------------


def _matches(key: SeriesKey, clauses: Mapping[str, str]) -> bool:
    resource, metric = key.resource_labels(), key.metric_labels()
    for name, value in clauses.items():
        if name == "metric.type":
            actual: str | None = REQUEST_COUNT_METRIC
        elif name == "resource.type":
            actual = RESOURCE_TYPE
        elif name.startswith("resource.label."):
            actual = resource.get(name.removeprefix("resource.label."))
        else:
            actual = metric.get(name.removeprefix("metric.label."))
        if actual != value:
            return False
    return True


def _in_window(buckets: Mapping[int, int], start: float, end: float) -> list[tuple[int, int]]:
    """The (second, count) buckets whose second lies in [start, end]; whole seconds."""
    first, last = math.floor(start), math.floor(end)
    return sorted((second, count) for second, count in buckets.items() if first <= second <= last)


def _periods(start: float, end: float, period: float) -> list[tuple[float, float]]:
    """Alignment periods ending at `end`, newest first, covering [start, end]."""
    count = max(1, math.ceil((end - start) / period)) if end > start else 1
    return [(end - (index + 1) * period, end - index * period) for index in range(count)]


def _point(start: float, end: float, value: int) -> dict[str, Any]:
    return {
        "interval": {"startTime": _rfc3339(start), "endTime": _rfc3339(end)},
        "value": {"int64Value": str(value)},
    }


def _series_json(
    metric_labels: Mapping[str, str],
    resource_labels: Mapping[str, str],
    points: list[dict[str, Any]],
    view: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metric": {"type": REQUEST_COUNT_METRIC, "labels": dict(metric_labels)},
        "resource": {"type": RESOURCE_TYPE, "labels": dict(resource_labels)},
        "metricKind": "DELTA",
        "valueType": "INT64",
        "unit": "1",
    }
    if view == "FULL":
        body["points"] = points
    return body


def list_time_series(counts: RequestCounts, project: str, request: ListRequest) -> dict[str, Any]:
    if request.clauses["metric.type"] != REQUEST_COUNT_METRIC:
        raise _invalid(
            f'Cannot find metric(s) that match type = "{request.clauses["metric.type"]}".'
            f" The emulator serves only {REQUEST_COUNT_METRIC}."
        )
    chosen = [
        (key, _in_window(buckets, request.start, request.end)) for key, buckets in counts.series(project)
    ]
    chosen = [(key, window) for key, window in chosen if window and _matches(key, request.clauses)]
    series: list[dict[str, Any]] = []
    if request.aligner == "ALIGN_NONE":
        for key, window in sorted(chosen, key=lambda item: repr(item[0])):
            points = [_point(second, second + 1, count) for second, count in reversed(window)]
            series.append(_series_json(key.metric_labels(), key.resource_labels(), points, request.view))
    else:
        assert request.alignment_period is not None
        periods = _periods(request.start, request.end, request.alignment_period)
        groups: dict[tuple[tuple[str, str], ...], dict[int, int]] = {}
        labels_of: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], dict[str, str]]] = {}
        for key, window in chosen:
            metric, resource = key.metric_labels(), key.resource_labels()
            if request.reducer == "REDUCE_SUM":
                metric = {k: v for k, v in metric.items() if f"metric.label.{k}" in request.group_by}
                resource = {k: v for k, v in resource.items() if f"resource.label.{k}" in request.group_by}
            group = tuple(
                sorted(
                    {
                        **{f"m.{k}": v for k, v in metric.items()},
                        **{f"r.{k}": v for k, v in resource.items()},
                    }.items()
                )
            )
            labels_of[group] = (metric, resource)
            totals = groups.setdefault(group, {})
            for second, count in window:
                index = next(
                    (i for i, (low, high) in enumerate(periods) if low < second + 1 and second <= high), None
                )
                if index is not None:
                    totals[index] = totals.get(index, 0) + count
        for group in sorted(groups):
            totals = groups[group]
            points = [_point(low, high, totals[i]) for i, (low, high) in enumerate(periods) if i in totals]
            metric, resource = labels_of[group]
            series.append(_series_json(metric, resource, points, request.view))
    page = series[request.page_offset : request.page_offset + request.page_size]
    body: dict[str, Any] = {"timeSeries": page, "unit": "1"}
    if request.page_offset + request.page_size < len(series):
        body["nextPageToken"] = str(request.page_offset + request.page_size)
    return body


COUNTS_KEY = web.AppKey("request_counts", RequestCounts)


async def list_time_series_handler(request: web.Request) -> web.Response:
    try:
        parsed = ListRequest.from_query(request.query, request.query.getall("aggregation.groupByFields", []))
        body = list_time_series(request.app[COUNTS_KEY], request.match_info["project"], parsed)
    except MonitoringError as exc:  # permanent: the request is refused, answered as Google does
        return web.json_response(exc.to_json(), status=exc.code)
    return web.json_response(body)


def add_routes(app: web.Application, counts: RequestCounts) -> None:
    app[COUNTS_KEY] = counts
    app.router.add_get("/v3/projects/{project}/timeSeries", list_time_series_handler)
