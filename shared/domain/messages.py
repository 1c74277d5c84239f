"""The internal step messages (`start-rolling-replace`, `cool-down-complete`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class InvalidStepMessage(ValueError):
    """An internal message that cannot be decoded: permanent, it will never decode."""


@dataclass(frozen=True)
class StepMessage:
    deployment_id: str
    app: str
    environment: str
    not_before: datetime | None = None

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        body: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "app": self.app,
            "environment": self.environment,
        }
        if self.not_before is not None:
            body["not_before"] = self.not_before.isoformat()
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
        not_before = None
        if raw.get("not_before") is not None:
            try:
                not_before = datetime.fromisoformat(str(raw["not_before"]))
            except ValueError as exc:  # permanent: never decodes
                raise InvalidStepMessage(f"not_before is not an ISO timestamp: {exc}") from exc
            if not_before.tzinfo is None:
                raise InvalidStepMessage("not_before has no timezone")
        return cls(raw["deployment_id"], raw["app"], raw["environment"], not_before)
