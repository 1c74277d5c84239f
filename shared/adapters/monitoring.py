"""The Metrics port on Cloud Monitoring: the load balancer's request counts per instance group.

Cloud Load Balancing reports `loadbalancing.googleapis.com/https/backend_request_count` per backend
group and response code. One `projects.timeSeries.list` call, summed per response-code class over
the window, gives the requests and the 5xx answers green served. The call goes through
`google-api-python-client`'s Monitoring v3 client, built from the discovery document it ships (no
network fetch), over REST: on GCP to monitoring.googleapis.com with the function's credentials,
locally to the emulator (`MONITORING_EMULATOR_HOST`), which serves the same API. The
`google-cloud-monitoring` library speaks gRPC only, which an HTTP emulator cannot serve.

Errors are translated here: 429, 5xx, timeouts and connection failures are transient; other 4xx
(permission, a metric the project does not have) are `MetricsUnavailable`, after which the bake
window verifies by health alone and says so.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import google.auth
import google_auth_httplib2
import httplib2
from google.auth.credentials import AnonymousCredentials, Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from shared.config import EnvironmentConfig
from shared.logging import get_logger
from shared.ports import MetricsUnavailable, TrafficSample, TransientError

log = get_logger("monitoring")

REQUEST_COUNT_METRIC = "loadbalancing.googleapis.com/https/backend_request_count"
READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
REQUEST_TIMEOUT_SECONDS = 10.0
MIN_ALIGNMENT_SECONDS = 60
"""Cloud Monitoring's smallest alignment period; the window's points are summed either way."""
SERVER_ERROR_CLASS = "500"
MAX_PAGES = 10


class MonitoringUnavailable(TransientError):
    """Cloud Monitoring failed in a way worth retrying."""


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def request_count_filter(env: EnvironmentConfig, group: str) -> str:
    """The time-series filter for what `env`'s backend service sent to `group`.

    >>> from shared.config import EnvironmentConfig
    >>> env = EnvironmentConfig("a", "b", "r", 1, 1, 1, "t", "hc", "svc", "/", 1, "")
    >>> request_count_filter(env, "g")
    'metric.type = "loadbalancing.googleapis.com/https/backend_request_count" AND resource.label.backend_target_name = "svc" AND resource.label.backend_name = "g"'
    """
    return (
        f'metric.type = "{REQUEST_COUNT_METRIC}"'
        f' AND resource.label.backend_target_name = "{env.backend_service}"'
        f' AND resource.label.backend_name = "{group}"'
    )


def sample_from_answer(answer: dict[str, Any]) -> TrafficSample:
    """Sum a `timeSeries.list` answer grouped by `metric.label.response_code_class`.

    >>> sample_from_answer({"timeSeries": [
    ...     {"metric": {"labels": {"response_code_class": "200"}}, "points": [{"value": {"int64Value": "7"}}]},
    ...     {"metric": {"labels": {"response_code_class": "500"}}, "points": [{"value": {"int64Value": "3"}}]}]})
    TrafficSample(requests=10, server_errors=3)
    >>> sample_from_answer({})
    TrafficSample(requests=0, server_errors=0)
    """
    requests = errors = 0
    for series in answer.get("timeSeries", []):
        count = sum(int(point["value"].get("int64Value", 0)) for point in series.get("points", []))
        requests += count
        if series.get("metric", {}).get("labels", {}).get("response_code_class") == SERVER_ERROR_CLASS:
            errors += count
    return TrafficSample(requests=requests, server_errors=errors)


class CloudMonitoring:
    def __init__(self, project: str, *, endpoint: str | None = None) -> None:
        """`endpoint` (e.g. http://127.0.0.1:8089) points the client at an emulator, anonymously."""
        self.project = project
        self.endpoint = endpoint
        self._credentials: Credentials | None = None
        self._client: Any = None

    def _service(self) -> tuple[Any, Credentials]:
        # Built on first use, not at cold start: most functions never read metrics.
        if self._client is None:
            if self.endpoint:
                credentials: Credentials = AnonymousCredentials()
            else:
                credentials, _ = google.auth.default(scopes=[READ_SCOPE])
            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            self._client = build(
                "monitoring",
                "v3",
                credentials=credentials,
                client_options=options,
                static_discovery=True,
                cache_discovery=False,
            )
            self._credentials = credentials
        assert self._credentials is not None
        return self._client, self._credentials

    def traffic(self, env: EnvironmentConfig, group: str, start: datetime, end: datetime) -> TrafficSample:
        client, credentials = self._service()
        window = max(MIN_ALIGNMENT_SECONDS, math.ceil((end - start).total_seconds()))
        request = (
            client.projects()
            .timeSeries()
            .list(
                name=f"projects/{self.project}",
                filter=request_count_filter(env, group),
                interval_startTime=_rfc3339(start),
                interval_endTime=_rfc3339(end),
                aggregation_alignmentPeriod=f"{window}s",
                aggregation_perSeriesAligner="ALIGN_DELTA",
                aggregation_crossSeriesReducer="REDUCE_SUM",
                aggregation_groupByFields=["metric.label.response_code_class"],
            )
        )
        # One HTTP connection per call: httplib2 connections are not safe to share between threads.
        http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=httplib2.Http(timeout=REQUEST_TIMEOUT_SECONDS)
        )
        series: list[Any] = []
        pages = 0
        while request is not None and pages < MAX_PAGES:
            answer = self._execute(request, http)
            series.extend(answer.get("timeSeries", []))
            # Grouped by response-code class there are a handful of series; follow pages anyway.
            request = client.projects().timeSeries().list_next(request, answer)
            pages += 1
        return sample_from_answer({"timeSeries": series})

    @staticmethod
    def _execute(request: Any, http: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = request.execute(http=http, num_retries=0)
        except HttpError as exc:  # classified below by its status
            status = exc.resp.status
            if status == 429 or status >= 500:  # transient: the bake step is redelivered
                raise MonitoringUnavailable(f"Cloud Monitoring answered {status}: {exc.reason}") from exc
            # permanent: permission or query refused; verification goes on by health alone
            raise MetricsUnavailable(f"Cloud Monitoring refused the query ({status}): {exc.reason}") from exc
        except (OSError, httplib2.HttpLib2Error) as exc:  # transient: network failure or timeout
            raise MonitoringUnavailable(f"Cloud Monitoring unreachable: {exc}") from exc
        return answer
