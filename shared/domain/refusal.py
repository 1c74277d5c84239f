"""What the release-control requests (rollback, promotion, approval) have in common when the
domain says no: each refusal carries the HTTP answer CONTRACT §4, §4b and §4c give it, so one
HTTP flow serves the three functions."""

from __future__ import annotations


class RequestRefused(Exception):
    """A request the domain refuses: permanent for this request; `http_status` is its answer."""

    http_status = 400
