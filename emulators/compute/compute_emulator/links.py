"""Resource names and links.

Resources are stored under their relative path (`projects/P/zones/Z/instanceGroupManagers/N`) and
rendered with the base URL the caller used, so links stay valid whatever host name reached us.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ApiError, invalid

NAME_PATTERN = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
# A MIG appends "-xxxx" to the base instance name, so it is at most 58 characters; "vm-###" asks
# for sequential numbers instead.
BASE_INSTANCE_NAME_PATTERN = re.compile(r"^[a-z](?:[-a-z0-9]{0,57}|[-a-z0-9]{0,51}-#{1,10})$")
ZONE_PATTERN = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
REGION_PATTERN = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")

_REFERENCE = re.compile(
    r"^(?:projects/(?P<project>[^/]+)/)?"
    r"(?P<scope>global|zones/[^/]+|regions/[^/]+)/(?P<collection>[A-Za-z]+)/(?P<name>[^/\s]+)$"
)


def check_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise ApiError(400, "required", f"Required field '{field}' not specified")
    if not NAME_PATTERN.fullmatch(name):
        raise invalid(
            f"Invalid value for field 'resource.{field}': '{name}'. "
            "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"
        )
    return name


def check_zone(zone: str) -> str:
    if not ZONE_PATTERN.fullmatch(zone):
        raise invalid(f"Invalid value for field 'zone': '{zone}'. Unknown zone.")
    return zone


def check_region(region: str) -> str:
    if not REGION_PATTERN.fullmatch(region):
        raise invalid(f"Invalid value for field 'region': '{region}'. Unknown region.")
    return region


def region_of_zone(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


@dataclass(frozen=True)
class Reference:
    project: str
    scope: str  # "global", "zones/us-central1-a" or "regions/us-central1"
    collection: str
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.scope}/{self.collection}/{self.name}"


def parse_reference(
    value: object, field: str, default_project: str, collections: tuple[str, ...]
) -> Reference:
    """Accept a full URL, a `projects/...` path, a `global/...`-style partial path or, for global
    collections, a bare name, as Compute Engine does for reference fields."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "required", f"Required field '{field}' not specified")
    text = value
    marker = text.find("projects/")
    if "://" in text:
        if marker < 0:
            raise invalid(f"Invalid value for field '{field}': '{value}'. The URL is malformed.")
        text = text[marker:]
    match = _REFERENCE.fullmatch(text)
    if match is None:
        if NAME_PATTERN.fullmatch(text) and len(collections) == 1 and collections[0] in _GLOBAL_COLLECTIONS:
            return Reference(default_project, "global", collections[0], text)
        raise invalid(f"Invalid value for field '{field}': '{value}'. The URL is malformed.")
    collection = match.group("collection")
    if collection not in collections:
        raise invalid(
            f"Invalid value for field '{field}': '{value}'. Expected a reference to {' or '.join(collections)}."
        )
    return Reference(
        match.group("project") or default_project, match.group("scope"), collection, match.group("name")
    )


_GLOBAL_COLLECTIONS = {"instanceTemplates", "healthChecks", "backendServices"}


def render(base_url: str, path: str) -> str:
    return f"{base_url}{path}"
