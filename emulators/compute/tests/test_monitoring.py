"""The Monitoring emulator: the load balancers' request counts through the real REST client."""

from __future__ import annotations

import datetime as dt
from typing import Any

import requests
from compute_emulator.discovery import discovery_document, problems
from emulator_helpers import Emulator, wait_until
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from test_load_balancer import healthy_group, insert_service

METRIC = "loadbalancing.googleapis.com/https/backend_request_count"


def _monitoring(emulator: Emulator) -> Any:
    return build(
        "monitoring",
        "v3",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.endpoint},
        static_discovery=True,
        cache_discovery=False,
    )


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _list(emulator: Emulator, project: str, **query: Any) -> dict[str, Any]:
    request = _monitoring(emulator).projects().timeSeries().list(name=f"projects/{project}", **query)
    raw = requests.get(request.uri, timeout=10)
    assert raw.status_code == 200, raw.text
    found = problems(discovery_document("monitoring.v3"), "ListTimeSeriesResponse", raw.json())
    assert found == [], found
    answer: dict[str, Any] = request.execute()
    return answer


def test_request_counts_per_response_code_class_of_one_group_answer_the_real_client(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    green = healthy_group(emulator, project, "green", artifacts["testapp"], "2.0.0", health_check)
    other = healthy_group(emulator, project, "other", artifacts["testapp"], "1.0.0", health_check)
    insert_service(emulator, project, health_check, [green])
    url = emulator.load_balancer_url(project, "web")
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    wait_until(lambda: requests.get(url + "/", timeout=5).status_code == 200, 10, "the LB to serve green")
    statuses = [requests.get(url + path, timeout=5).status_code for path in ["/"] * 6 + ["/missing"] * 3]
    ended = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    window = (ended - started).total_seconds()
    group_name = green.rsplit("/", 1)[1]

    answer = _list(
        emulator,
        project,
        filter=f'metric.type = "{METRIC}" AND resource.label.backend_name = "{group_name}"',
        interval_startTime=_rfc3339(started),
        interval_endTime=_rfc3339(ended),
        aggregation_alignmentPeriod=f"{int(window) + 1}s",
        aggregation_perSeriesAligner="ALIGN_DELTA",
        aggregation_crossSeriesReducer="REDUCE_SUM",
        aggregation_groupByFields=["metric.label.response_code_class"],
    )

    by_class = {
        series["metric"]["labels"]["response_code_class"]: sum(
            int(p["value"]["int64Value"]) for p in series["points"]
        )
        for series in answer["timeSeries"]
    }
    assert statuses.count(404) == 3
    assert by_class["400"] == 3
    assert by_class["200"] >= 6, "the wait's own successful requests count too"
    assert set(by_class) == {"200", "400"}
    assert all(s["metricKind"] == "DELTA" and s["valueType"] == "INT64" for s in answer["timeSeries"])

    other_name = other.rsplit("/", 1)[1]
    unattached = _list(
        emulator,
        project,
        filter=f'metric.type = "{METRIC}" AND resource.label.backend_name = "{other_name}"',
        interval_startTime=_rfc3339(started),
        interval_endTime=_rfc3339(ended),
    )
    assert unattached.get("timeSeries", []) == [], "a group the LB never used has no requests"


def test_raw_series_carry_the_labels_of_cloud_load_balancing(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    insert_service(emulator, project, health_check, [])
    url = emulator.load_balancer_url(project, "web")
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert requests.get(url + "/", timeout=5).status_code == 503
    answer = _list(
        emulator,
        project,
        filter=f'metric.type = "{METRIC}" AND resource.type = "https_lb_rule"',
        interval_startTime=_rfc3339(started),
        interval_endTime=_rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)),
    )
    [series] = answer["timeSeries"]
    assert series["resource"]["labels"]["backend_type"] == "NO_BACKEND_SELECTED"
    assert series["resource"]["labels"]["backend_target_name"] == "web"
    assert series["metric"]["labels"]["response_code"] == "503"
    assert series["points"][0]["value"]["int64Value"] == "1"


def test_an_unsupported_query_is_a_400_naming_it(emulator: Emulator, project: str) -> None:
    now = _rfc3339(dt.datetime.now(dt.UTC))
    request = (
        _monitoring(emulator)
        .projects()
        .timeSeries()
        .list(
            name=f"projects/{project}",
            filter=f'metric.type = "{METRIC}"',
            interval_endTime=now,
            aggregation_alignmentPeriod="60s",
            aggregation_perSeriesAligner="ALIGN_PERCENTILE_99",
        )
    )
    try:
        request.execute()
    except HttpError as exc:
        assert exc.resp.status == 400
        assert "ALIGN_PERCENTILE_99" in str(exc)
    else:
        raise AssertionError("an unsupported aligner must be refused")
