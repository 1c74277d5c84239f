"""The emulator's state: a registry of resources, and one class per resource for what it accepts.

The split follows the API's resources, as the HTTP handlers in `api` do.
"""

from __future__ import annotations

from .groups import InstanceGroupManagers
from .health_checks import HealthChecks
from .registry import Registry, default_zones
from .services import BackendServices
from .templates import InstanceTemplates


class Emulator(InstanceTemplates, HealthChecks, InstanceGroupManagers, BackendServices):
    """Every resource the emulator serves, over one registry."""


__all__ = ["Emulator", "Registry", "default_zones"]
