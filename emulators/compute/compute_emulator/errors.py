"""Errors in the shape Google APIs use, so clients map them to the usual exception classes."""

from __future__ import annotations

from typing import Any

_STATUS_BY_CODE = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}

# Operation errors carry an upper-case code instead of an HTTP reason.
_OPERATION_CODE_BY_REASON = {
    "notFound": "RESOURCE_NOT_FOUND",
    "alreadyExists": "RESOURCE_ALREADY_EXISTS",
    "resourceInUseByAnotherResource": "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE",
    "conditionNotMet": "CONDITION_NOT_MET",
    "invalid": "INVALID_FIELD_VALUE",
    "required": "REQUIRED_FIELD_MISSING",
    "backendError": "INTERNAL_ERROR",
}


class ApiError(Exception):
    """A request the API refuses; rendered as Google's error JSON (or an operation's `error`)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
                "status": _STATUS_BY_CODE.get(self.code, "UNKNOWN"),
            }
        }

    def operation_code(self) -> str:
        return _OPERATION_CODE_BY_REASON.get(self.reason, self.reason.upper())


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def required(field: str) -> ApiError:
    return ApiError(400, "required", f"Required field '{field}' not specified")


def not_found(resource_path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{resource_path}' was not found")


def already_exists(resource_path: str) -> ApiError:
    return ApiError(409, "alreadyExists", f"The resource '{resource_path}' already exists")


def condition_not_met(message: str) -> ApiError:
    return ApiError(412, "conditionNotMet", message)


def in_use(resource_path: str, user_path: str) -> ApiError:
    return ApiError(
        400,
        "resourceInUseByAnotherResource",
        f"The resource '{resource_path}' is already being used by '{user_path}'",
    )


def internal(message: str = "Internal error. Please try again or contact Google Support.") -> ApiError:
    return ApiError(500, "backendError", message)
