"""The internal step messages (`start-rolling-replace`, `cool-down-complete`, `bake-check`), and how
any raw message is kept on a record.

A step message names its deployment, and a step acts only on what the deployment record says,
which a late or duplicate message cannot contradict. A message may also carry hints: copies of
the record's fields a poll needs to see that it is not time yet (green's group, the cool-down's
end, when the release went live). A poll that only finds "wait" then reads no record; a hint
that is missing, malformed or implausible, or that says it is time, makes the step read the
record and decide from it, as without hints. (Messages published by earlier versions may carry
`not_before`; it is ignored.)
The `notify` event, the other internal message, is in `notify_message.py` beside this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_STORED_PAYLOAD = 4096
"""Bytes of a raw message kept on its record (rejected or dead-lettered events)."""


def stored_payload(data: bytes) -> str:
    r"""A raw message as text for its record: at most MAX_STORED_PAYLOAD bytes, decoded leniently.

    >>> stored_payload(b'{"app": "caf\xc3"}')
    '{"app": "caf\ufffd"}'
    >>> len(stored_payload(b"x" * 5000))
    4096
    """
    return data[:MAX_STORED_PAYLOAD].decode("utf-8", errors="replace")


class InvalidStepMessage(ValueError):
    """An internal message that cannot be decoded: permanent, it will never decode."""


@dataclass(frozen=True)
class StepMessage:
    deployment_id: str
    app: str
    environment: str
    instance_group: str | None = None
    """Hint: green's group as recorded when the message was published."""
    cool_down_ends_at: datetime | None = None
    """Hint: the recorded end of the cool-down (`not_before`)."""
    went_live_at: datetime | None = None
    """Hint: when the release went live, the start of its bake window."""

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        """The message's data and attributes.

        >>> from datetime import UTC
        >>> message = StepMessage("d", "a", "e", "g", datetime(2026, 1, 1, 9, 0, tzinfo=UTC))
        >>> StepMessage.from_message(message.to_message()[0]) == message
        True
        """
        body: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "app": self.app,
            "environment": self.environment,
        }
        for key, value in (
            ("instance_group", self.instance_group),
            ("cool_down_ends_at", self.cool_down_ends_at.isoformat() if self.cool_down_ends_at else None),
            ("went_live_at", self.went_live_at.isoformat() if self.went_live_at else None),
        ):
            if value is not None:
                body[key] = value
        attributes = {"deployment_id": self.deployment_id, "app": self.app, "environment": self.environment}
        return json.dumps(body, sort_keys=True).encode(), attributes

    @classmethod
    def from_message(cls, data: bytes) -> StepMessage:
        """Decode a step message; a malformed hint is dropped (the step then reads the record).

        >>> StepMessage.from_message(b'{"deployment_id": "d", "app": "a", "environment": "e",'
        ...     b' "instance_group": 7, "cool_down_ends_at": "soon", "went_live_at": "2026-01-01T09:00:00"}')
        StepMessage(deployment_id='d', app='a', environment='e', instance_group=None, cool_down_ends_at=None, went_live_at=None)
        """
        try:
            raw: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # permanent: never decodes
            raise InvalidStepMessage(f"step message is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise InvalidStepMessage("step message is not a JSON object")
        for key in ("deployment_id", "app", "environment"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise InvalidStepMessage(f"step message lacks {key}")
        group = raw.get("instance_group")
        return cls(
            raw["deployment_id"],
            raw["app"],
            raw["environment"],
            instance_group=group if isinstance(group, str) and group else None,
            cool_down_ends_at=_hinted_time(raw.get("cool_down_ends_at")),
            went_live_at=_hinted_time(raw.get("went_live_at")),
        )


def _hinted_time(value: Any) -> datetime | None:
    """A hint's timestamp: timezone-aware ISO 8601, else None (the step reads the record instead).

    >>> _hinted_time("2026-01-01T09:00:00+00:00").isoformat()
    '2026-01-01T09:00:00+00:00'
    >>> _hinted_time("2026-01-01T09:00:00") is None, _hinted_time(None) is None, _hinted_time("x") is None
    (True, True, True)
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # permanent for this message, harmless: without the hint the record decides
        return None
    return parsed if parsed.tzinfo is not None else None
