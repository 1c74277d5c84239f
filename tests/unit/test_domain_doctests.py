"""The domain's docstring examples are tests too."""

import doctest
import importlib

import pytest

MODULES = [
    "shared.domain.status",
    "shared.domain.messages",
    "shared.domain.versioning",
    "shared.domain.queue",
    "shared.domain.naming",
    "shared.domain.identifiers",
    "shared.domain.retention",
    "shared.domain.approval",
    "shared.domain.promotion",
    "shared.domain.release_request",
    "shared.domain.rollback",
    "shared.domain.metrics",
    "shared.domain.verification",
    "shared.domain.identity",
    "shared.domain.notify_message",
    "shared.adapters.monitoring",
    "compute_emulator.discovery",
    "compute_emulator.monitoring",
    "compute_emulator.state.registry",
    "compute_emulator.state.services",
    "shared.domain.build_event",
    "shared.domain.artifact_origin",
    "shared.domain.redeploy",
    "shared.domain.windows",
    "devstack.services",
    "devstack.local_config",
    "devstack.processes",
    "shared.adapters.notification_ledger",
    "bench.process_cpu",
    "bench.scale_report",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
