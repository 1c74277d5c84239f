"""The release dashboard's HTML: server-rendered, readable without JavaScript.

Every value from the records is escaped. The page's own script and style carry a per-response
nonce that the Content-Security-Policy requires, so no other script can run in the page.
Parts marked `data-refresh` are swapped in place by the script while the user watches.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

from shared.domain.dashboard_view import DeploymentView, EnvironmentView, durations_text
from shared.domain.metrics import Band, DeliveryMetrics, Percentiles, format_seconds

ASSETS = Path(__file__).resolve().parent


@cache
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def content_security_policy(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


@dataclass(frozen=True)
class PageContext:
    now: datetime
    window_days: int
    nonce: str
    local_sign_in: bool
    """Offer a token from the local issuer (the local stack only)."""
    default_email: str = ""
    message: str = ""
    message_is_error: bool = False
    app: str | None = None


def e(value: object) -> str:
    """Escape for HTML text and attribute values.

    >>> e('<b title="x">&</b>')
    '&lt;b title=&quot;x&quot;&gt;&amp;&lt;/b&gt;'
    """
    return html.escape("" if value is None else str(value), quote=True)


def when(value: datetime | None) -> str:
    """A `<time>` element in UTC, or a dash."""
    if value is None:
        return "-"
    utc = value.astimezone(UTC)
    return f'<time datetime="{e(utc.isoformat())}">{e(utc.strftime("%Y-%m-%d %H:%M:%S"))} UTC</time>'


def render_page(views: Sequence[EnvironmentView], context: PageContext) -> str:
    title = f"Releases · {context.app}" if context.app else "Releases"
    environments = "\n".join(_environment(view, context) for view in views) or (
        "<p>No environments are configured.</p>"
    )
    result_class = ' class="error"' if context.message_is_error else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style nonce="{e(context.nonce)}">{_asset("dashboard.css")}</style>
</head>
<body>
<a class="skip" href="#main">Skip to the environments</a>
<header>
<h1>{e(title)}</h1>
<p class="muted" id="updated">Updated {when(context.now)} · metrics over the last {context.window_days} days ·
<a href="">Refresh</a></p>
</header>
{_identity_panel(context)}
<div id="action-result" role="status" aria-live="polite" tabindex="-1"{result_class}>{e(context.message)}</div>
<main id="main">
{environments}
</main>
<script nonce="{e(context.nonce)}">{_asset("dashboard.js")}</script>
</body>
</html>
"""


def _identity_panel(context: PageContext) -> str:
    local = ""
    if context.local_sign_in:
        local = f"""
<form id="local-sign-in" class="inline" method="get">
<label for="sign-in-email">Local identity (e-mail)
<input id="sign-in-email" name="local_token_for" type="email" required value="{e(context.default_email)}"></label>
<button type="submit">Get a token from the local issuer</button>
</form>"""
    signed_out = (
        "Approve, reject and roll back send your identity token to the pipeline's functions, "
        "which check who you are. Paste the output of `gcloud auth print-identity-token` (or "
        "`releasectl token`)" + (", or get a local token" if context.local_sign_in else "") + "."
    )
    return f"""<section class="panel" aria-labelledby="identity-title">
<details>
<summary><h2 id="identity-title" class="in-summary">Your identity</h2></summary>
<p id="identity-status" data-signed-out="{e(signed_out)}">{e(signed_out)}</p>
{local}
<form id="token-form" class="inline">
<label for="identity-token">Identity token
<input id="identity-token" type="password" autocomplete="off" spellcheck="false"></label>
<button type="submit">Use this token</button>
<button type="button" id="sign-out" hidden>Forget the token</button>
</form>
</details>
</section>"""


def _environment(view: EnvironmentView, context: PageContext) -> str:
    key = e(view.key)
    link = f' · <a href="{e(view.url)}">{e(view.url)}</a>' if view.url else ""
    return f"""<section class="environment" id="env-{key}" aria-labelledby="title-{key}">
<h2 id="title-{key}">{e(view.app)} · {e(view.environment)}<span class="muted">{link}</span></h2>
<div class="grid">
<div>
{_live(view)}
{_in_flight(view)}
{_approvals(view)}
</div>
<div>
{_keys(view, context)}
{_rollback_form(view)}
</div>
</div>
{_history(view)}
</section>"""


def _live(view: EnvironmentView) -> str:
    key = e(view.key)
    if view.live is None:
        body = '<p class="live-version">nothing yet</p>'
    else:
        body = (
            f'<p class="live-version" data-version="{e(view.live.version)}">{e(view.live.version)}</p>'
            f'<p class="muted">since {when(view.live_since)} · {e(view.live.deployment_id)} · '
            f"commit <code>{e(view.live.commit[:7])}</code></p>"
        )
    return f'<div id="live-{key}" data-refresh><h3>Live</h3>{body}</div>'


def _timeline(d: DeploymentView) -> str:
    items = []
    for step in d.timeline:
        current = ' aria-current="step"' if step.state in ("current", "failed") else ""
        seconds = f" <span>{e(format_seconds(step.seconds))}</span>" if step.seconds is not None else ""
        state = {"done": "done", "current": "in progress", "pending": "not started", "failed": "ended"}[
            step.state
        ]
        items.append(
            f'<li class="{e(step.state)}" data-phase="{e(step.phase)}"{current}>{e(step.label)}{seconds}'
            f'<span class="skip"> ({e(state)})</span></li>'
        )
    return f'<ol class="timeline" aria-label="phases of {e(d.version)}">{"".join(items)}</ol>'


def _in_flight(view: EnvironmentView) -> str:
    key = e(view.key)
    if not view.in_flight:
        body = "<p>Nothing in flight.</p>"
    else:
        body = "".join(
            f'<article class="deployment in-flight" data-deployment="{e(d.deployment_id)}"'
            f' data-phase="{e(d.current_phase)}">'
            f"<strong>{e(d.version)}</strong> {_status(d.status)} "
            f'<span class="muted">{e(d.deployment_id)} · requested by {e(d.requested_by or "CI")}</span>'
            f"{_timeline(d)}" + (f'<p class="muted">{e(d.detail)}</p>' if d.detail else "") + "</article>"
            for d in view.in_flight
        )
    return f'<div id="inflight-{key}" data-refresh><h3>In flight</h3>{body}</div>'


def _token_field(form_id: str) -> str:
    return (
        f'<label class="token-field" for="token-{form_id}">Identity token'
        f'<input id="token-{form_id}" name="token" type="password" autocomplete="off"></label>'
    )


def _approvals(view: EnvironmentView) -> str:
    key = e(view.key)
    if not view.awaiting_approval:
        body = "<p>No deployment is waiting for approval.</p>"
    else:
        parts = []
        for d in view.awaiting_approval:
            form_id = e(d.deployment_id)
            changes = "".join(f"<li>{e(message)}</li>" for message in d.changelog[:10])
            parts.append(
                f'<article class="deployment awaiting" data-deployment="{form_id}">'
                f"<strong>{e(d.version)}</strong> {_status(d.status)} "
                f'<span class="muted">requested by {e(d.requested_by or "CI")} · {when(d.created_at)}</span>'
                + (f"<ul>{changes}</ul>" if changes else "")
                + f'<form class="inline action" data-kind="approve" method="post"'
                f' aria-label="approve or reject {e(d.version)}">'
                f'<input type="hidden" name="action" value="decide">'
                f'<input type="hidden" name="deployment_id" value="{form_id}">'
                f'<label for="reason-{form_id}">Reason<input id="reason-{form_id}" name="reason" maxlength="500"></label>'
                f"{_token_field(form_id)}"
                f'<button class="approve" name="decision" value="approve">Approve {e(d.version)}</button>'
                f'<button class="danger" name="decision" value="reject">Reject</button>'
                "</form></article>"
            )
        body = "".join(parts)
    return f'<div id="approvals-{key}" data-refresh><h3>Awaiting approval</h3>{body}</div>'


def _band(band: Band | None) -> str:
    if band is None:
        return ""
    return f' <span class="band band-{e(band)}">{e(band)}</span>'


def _pair(values: Percentiles) -> str:
    if values.p50 is None:
        return "no data"
    return f"{format_seconds(values.p50)} (p90 {format_seconds(values.p90)})"


def _keys(view: EnvironmentView, context: PageContext) -> str:
    key = e(view.key)
    metrics = view.metrics
    bands = metrics.bands
    frequency = metrics.deployment_frequency_per_day
    rate = metrics.change_failure_rate
    rows = [
        (
            "Deployment frequency",
            "-" if frequency is None else f"{frequency:.2f} a day",
            bands["deployment_frequency"],
        ),
        ("Lead time for changes", _pair(metrics.lead_time_seconds), bands["lead_time"]),
        (
            "Change failure rate",
            "no data" if rate is None else f"{rate:.0%} ({metrics.change_failures} of {metrics.deployments})",
            bands["change_failure_rate"],
        ),
        ("Time to restore", _pair(metrics.time_to_restore_seconds), bands["time_to_restore"]),
    ]
    items = "".join(
        f'<dt>{e(label)}</dt><dd data-key="{e(label)}">{e(value)}{_band(band)}</dd>'
        for label, value, band in rows
    )
    return (
        f'<div id="keys-{key}" data-refresh><h3>Four keys, last {context.window_days} days</h3>'
        f'<dl class="keys">{items}</dl>{_chart(metrics, key)}</div>'
    )


def _chart(metrics: DeliveryMetrics, key: str) -> str:
    days: Sequence[tuple[date, int]] = metrics.live_per_day
    if not days:
        return ""
    width, height, gap = 300, 60, 1
    bar = max(1.0, width / len(days) - gap)
    top = max(count for _, count in days) or 1
    bars = []
    for index, (day, count) in enumerate(days):
        h = round(height * count / top, 1)
        x = round(index * (bar + gap), 1)
        label = f"{day.isoformat()}: {count} deployment{'s' if count != 1 else ''} went live"
        bars.append(
            f'<rect x="{x}" y="{height - h}" width="{round(bar, 1)}" height="{h}"><title>{e(label)}</title></rect>'
        )
    total = sum(count for _, count in days)
    summary = f"Deployments that went live per day: {total} in {len(days)} days, at most {top} a day"
    return (
        f'<svg class="chart" role="img" aria-labelledby="chart-{key}" viewBox="0 0 {width} {height + 1}"'
        f' width="{width}" height="{height + 1}"><title id="chart-{key}">{e(summary)}</title>'
        f'<line x1="0" y1="{height + 0.5}" x2="{width}" y2="{height + 0.5}"/>{"".join(bars)}</svg>'
        f'<p class="muted chart-caption" aria-hidden="true">Deployments live per day, {e(days[0][0].isoformat())}'
        f" to {e(days[-1][0].isoformat())} (most: {top})</p>"
    )


def _rollback_form(view: EnvironmentView) -> str:
    key = e(view.key)
    if view.live is None:
        return f'<div id="rollback-{key}" data-refresh><h3>Roll back</h3><p>Nothing is live to roll back.</p></div>'
    options = '<option value="">the release live before this one</option>' + "".join(
        f'<option value="{e(version)}">{e(version)}</option>' for version in view.rollback_targets
    )
    return f"""<div id="rollback-{key}" data-refresh><h3>Roll back</h3>
<form class="inline action" data-kind="rollback" method="post" aria-label="roll back {e(view.app)} on {e(view.environment)}">
<input type="hidden" name="action" value="rollback">
<input type="hidden" name="app" value="{e(view.app)}">
<input type="hidden" name="environment" value="{e(view.environment)}">
<label for="to-{key}">To<select id="to-{key}" name="to_version">{options}</select></label>
<label for="why-{key}">Reason<input id="why-{key}" name="reason" maxlength="500"></label>
{_token_field("rollback-" + view.key)}
<button class="danger" type="submit">Roll back {e(view.environment)}</button>
</form></div>"""


def _status(status: str) -> str:
    return f'<span class="status status-{e(status)}">{e(status.replace("_", " "))}</span>'


def _history(view: EnvironmentView) -> str:
    key = e(view.key)
    if not view.history:
        return f'<div id="history-{key}" data-refresh><h3>History</h3><p>No deployments yet.</p></div>'
    rows = []
    for d in view.history:
        changes = "".join(f"<li>{e(message)}</li>" for message in d.changelog[:5])
        note = f'<br><span class="muted">rollback of {e(d.rollback_of)}</span>' if d.rollback_of else ""
        rows.append(
            "<tr>"
            f"<td>{e(d.version)}{note}</td>"
            f"<td>{_status(d.status)}</td>"
            f"<td>{when(d.created_at)}</td>"
            f"<td>{e(d.requested_by or 'CI')}</td>"
            f"<td>{e(', '.join(d.approved_by) or '-')}</td>"
            f"<td>{f'<ul>{changes}</ul>' if changes else '-'}</td>"
            f'<td>{e(format_seconds(d.total_seconds))}<br><span class="muted">{e(durations_text(d))}</span></td>'
            "</tr>"
        )
    return f"""<div id="history-{key}" data-refresh><h3>History</h3>
<div class="table-wrap"><table>
<caption class="skip">Deployments of {e(view.app)} on {e(view.environment)}, newest first</caption>
<thead><tr><th scope="col">Version</th><th scope="col">Status</th><th scope="col">Created</th>
<th scope="col">Requested by</th><th scope="col">Approved by</th><th scope="col">Changelog</th>
<th scope="col">Duration</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></div></div>"""
