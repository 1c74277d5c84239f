"""The internal step messages (`start-rolling-replace`, `cool-down-complete`), and how any raw
message is kept on a record.

A step message names its deployment only: the step reads everything else, the cool-down's end
included, from the deployment record, which a late or duplicate message cannot contradict.
(Messages published by earlier versions may still carry `not_before`; it is ignored.)
The `notify` event, the other internal message, is in `notify_message.py` beside this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        body: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "app": self.app,
            "environment": self.environment,
        }
        attributes = {"deployment_id": self.deployment_id, "app": self.app, "environment": self.environment}
        return json.dumps(body, sort_keys=True).encode(), attributes

    @classmethod
    def from_message(cls, data: bytes) -> StepMessage:
        try:
            raw: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # permanent: never decodes
            raise InvalidStepMessage(f"step message is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise InvalidStepMessage("step message is not a JSON object")
        for key in ("deployment_id", "app", "environment"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise InvalidStepMessage(f"step message lacks {key}")
        return cls(raw["deployment_id"], raw["app"], raw["environment"])
