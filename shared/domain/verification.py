"""Release verification (CONTRACT §9): smoke checks before traffic, a bake window after it.

Pure rules. The use cases gather the facts (an HTTP answer from the preview URL, green's health
at the load balancer, its request counts) and these functions say what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

BODY_EXCERPT = 200
"""How much of an unexpected answer a failure message quotes."""
AUTOMATIC_ROLLBACK_ACTOR = "pipeline (bake window)"
"""`triggered_by` of a rollback the pipeline started itself after a failed bake window."""


@dataclass(frozen=True)
class SmokeCheck:
    """One request the preview must answer as expected before green gets traffic."""

    path: str
    method: str = "GET"
    expect_status: int = 200
    body_contains: str | None = None
    timeout_seconds: float = 5.0

    @property
    def label(self) -> str:
        """
        >>> SmokeCheck("/", body_contains="hello").label
        "GET / → 200 containing 'hello'"
        """
        wanted = f" containing {self.body_contains!r}" if self.body_contains is not None else ""
        return f"{self.method} {self.path} → {self.expect_status}{wanted}"


@dataclass(frozen=True)
class SmokeAnswer:
    """What the preview answered: a status and the start of the body, or why there was none."""

    status: int | None
    body: str = ""
    error: str | None = None
    """Set when no HTTP answer came (refused, timed out)."""


def smoke_check_failure(check: SmokeCheck, answer: SmokeAnswer) -> str | None:
    """None if `answer` is what `check` expects, else what went wrong, quoting the answer.

    >>> check = SmokeCheck("/", body_contains="1.2")
    >>> smoke_check_failure(check, SmokeAnswer(200, "1.2.0"))
    >>> smoke_check_failure(check, SmokeAnswer(500, "Internal Server Error"))
    "smoke check GET / → 200 containing '1.2' failed: answered 500 'Internal Server Error'"
    >>> smoke_check_failure(check, SmokeAnswer(200, "1.1.0"))
    "smoke check GET / → 200 containing '1.2' failed: the body lacks '1.2': '1.1.0'"
    >>> smoke_check_failure(check, SmokeAnswer(None, error="timed out after 5 s"))
    "smoke check GET / → 200 containing '1.2' failed: no answer (timed out after 5 s)"
    """
    prefix = f"smoke check {check.label} failed: "
    if answer.status is None:
        return prefix + f"no answer ({answer.error or 'unknown error'})"
    excerpt = answer.body[:BODY_EXCERPT].strip()
    if answer.status != check.expect_status:
        return prefix + f"answered {answer.status} {excerpt!r}"
    if check.body_contains is not None and check.body_contains not in answer.body:
        return prefix + f"the body lacks {check.body_contains!r}: {excerpt!r}"
    return None


class VerificationState(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class Verification:
    """The bake window's verdict on a deployment that went live, with what it measured."""

    state: VerificationState
    detail: str
    checked_at: datetime
    ends_at: datetime
    requests: int | None = None
    server_errors: int | None = None
    metrics: bool = True
    """False when the verdict rests on health alone (no metrics source, or it refused)."""

    @property
    def error_ratio(self) -> float | None:
        if not self.requests or self.server_errors is None:
            return None
        return self.server_errors / self.requests

    def concluded(
        self,
        state: VerificationState,
        detail: str,
        at: datetime,
        measured: Measurement,
    ) -> Verification:
        return replace(
            self,
            state=state,
            detail=detail,
            checked_at=at,
            requests=measured.requests,
            server_errors=measured.server_errors,
            metrics=measured.metrics_reason is None,
        )


@dataclass(frozen=True)
class BakeRules:
    bake_seconds: int
    max_error_ratio: float
    min_requests: int


@dataclass(frozen=True)
class Measurement:
    """One look at green during its bake window."""

    elapsed_seconds: float
    healthy: bool
    health_detail: str = ""
    requests: int | None = None
    server_errors: int | None = None
    metrics_reason: str | None = None
    """Why there are no request counts (None when there are)."""


@dataclass(frozen=True)
class BakeVerdict:
    state: VerificationState
    detail: str


def percent(ratio: float) -> str:
    """
    >>> percent(0.4793), percent(0.0042), percent(0.0), percent(0.05)
    ('48%', '0.4%', '0%', '5%')
    """
    text = f"{ratio:.0%}" if ratio >= 0.1 else f"{ratio:.1%}"
    return text.replace(".0%", "%")


def describe_traffic(requests: int, server_errors: int, seconds: float) -> str:
    """
    >>> describe_traffic(1210, 580, 4.2)
    '5xx 48% of 1,210 requests in 4 s'
    """
    ratio = server_errors / requests if requests else 0.0
    return f"5xx {percent(ratio)} of {requests:,} requests in {seconds:.0f} s"


def judge_bake(rules: BakeRules, measured: Measurement) -> BakeVerdict:
    """Fail on unhealthy green or a 5xx ratio above the limit (over enough requests); pass once the
    window is over; otherwise keep watching.

    >>> rules = BakeRules(bake_seconds=15, max_error_ratio=0.05, min_requests=20)
    >>> judge_bake(rules, Measurement(4.2, True, requests=1210, server_errors=580)).detail
    '5xx 48% of 1,210 requests in 4 s (limit 5%)'
    >>> judge_bake(rules, Measurement(4.2, True, requests=10, server_errors=10)).state
    <VerificationState.PENDING: 'pending'>
    >>> judge_bake(rules, Measurement(3, False, health_detail="1/2 instances healthy")).detail
    'green unhealthy at the load balancer: 1/2 instances healthy'
    >>> judge_bake(rules, Measurement(15, True, requests=900, server_errors=1)).detail
    'passed: 5xx 0.1% of 900 requests in 15 s (limit 5%)'
    >>> judge_bake(rules, Measurement(15, True, requests=5, server_errors=0)).detail
    'passed on health: 5 requests in 15 s, fewer than the 20 needed to judge the 5xx ratio'
    >>> judge_bake(rules, Measurement(15, True, metrics_reason="no metrics source")).detail
    'passed on health alone (no metrics source)'
    """
    if not measured.healthy:
        return BakeVerdict(
            VerificationState.FAILED, f"green unhealthy at the load balancer: {measured.health_detail}"
        )
    counted = measured.requests is not None and measured.server_errors is not None
    requests = measured.requests or 0
    errors = measured.server_errors or 0
    limit = f"(limit {percent(rules.max_error_ratio)})"
    traffic = describe_traffic(requests, errors, measured.elapsed_seconds)
    if counted and requests >= rules.min_requests and errors / requests > rules.max_error_ratio:
        return BakeVerdict(VerificationState.FAILED, f"{traffic} {limit}")
    if measured.elapsed_seconds < rules.bake_seconds:
        return BakeVerdict(VerificationState.PENDING, f"baking: {traffic}" if counted else "baking")
    if not counted:
        return BakeVerdict(VerificationState.PASSED, f"passed on health alone ({measured.metrics_reason})")
    if requests < rules.min_requests:
        return BakeVerdict(
            VerificationState.PASSED,
            f"passed on health: {requests:,} requests in {measured.elapsed_seconds:.0f} s, fewer than the"
            f" {rules.min_requests:,} needed to judge the 5xx ratio",
        )
    return BakeVerdict(VerificationState.PASSED, f"passed: {traffic} {limit}")
