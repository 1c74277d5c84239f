"""The composition root: builds the adapters once per function instance (cold start), from the
environment, and hands each entry point the ports its use case needs.

Environment variable names come only from `shared.config`. A missing or invalid setting
fails the cold start with an error naming it, instead of failing later mid-deployment.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from shared.config import (
    ENV_APPROVE_AUDIENCE,
    ENV_COMPUTE_EMULATOR_HOST,
    ENV_DASHBOARD_APPROVE_URL,
    ENV_DASHBOARD_LOCAL_TOKEN_URL,
    ENV_DASHBOARD_ROLLBACK_URL,
    ENV_MONITORING_EMULATOR_HOST,
    ENV_NOTIFICATIONS_FILE,
    ENV_PROJECT,
    ENV_PROMOTE_AUDIENCE,
    ENV_ROLLBACK_AUDIENCE,
    ConfigError,
    PipelineConfig,
    load_pipeline_config,
    parse_audiences,
)
from shared.usecases.dashboard import DashboardServices
from shared.usecases.notify import NotifyServices
from shared.usecases.services import Services

T = TypeVar("T")


class built_once(Generic[T]):
    """`functools.cache` for a function of no arguments, except that concurrent first calls wait
    for one build instead of each running its own.

    A function instance serves several requests at once (a thread each), and the first burst on
    a cold instance used to build the clients once per thread, each with its own start-up
    collection: several times the cold start's CPU, and clients thrown away. A build that raises
    stores nothing: the next call tries again.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._built: list[T] = []
        functools.update_wrapper(self, build)

    def __call__(self) -> T:
        if not self._built:
            with self._lock:
                if not self._built:
                    self._built.append(self._build())
        return self._built[0]

    def cache_clear(self) -> None:
        """Forget the built value (tests build again with other settings)."""
        with self._lock:
            self._built.clear()


def project_id() -> str:
    project = os.environ.get(ENV_PROJECT, "").strip()
    if not project:
        raise ConfigError(f"{ENV_PROJECT}: required (the Google Cloud project id)")
    return project


@built_once
def pipeline_config() -> PipelineConfig:
    return load_pipeline_config()


@built_once
def services() -> Services:
    from shared.adapters.clock import SystemClock
    from shared.adapters.compute_engine import ComputeEngine
    from shared.adapters.firestore_store import FirestoreStore
    from shared.adapters.http_probe import HttpSmokeProbe
    from shared.adapters.monitoring import CloudMonitoring
    from shared.adapters.pubsub_publisher import PubSubPublisher

    project = project_id()
    config = pipeline_config()
    compute_host = _emulator_host(ENV_COMPUTE_EMULATOR_HOST)
    monitoring_host = _emulator_host(ENV_MONITORING_EMULATOR_HOST)
    built = Services(
        config=config,
        store=FirestoreStore.from_environment(project),
        compute=ComputeEngine(project, endpoint=f"http://{compute_host}" if compute_host else None),
        publisher=PubSubPublisher(project),
        clock=SystemClock(),
        metrics=CloudMonitoring(project, endpoint=f"http://{monitoring_host}" if monitoring_host else None),
        probe=HttpSmokeProbe(),
    )
    _keep_start_up_objects_out_of_collections()
    return built


def _keep_start_up_objects_out_of_collections() -> None:
    """The client libraries leave about 230,000 objects behind at start-up (google-cloud-compute
    alone builds thousands of message classes), all alive as long as the instance. Each full
    collection of the cyclic garbage collector walked every one of them, about 140 ms of CPU in
    the middle of a request; frozen, the collector skips them."""
    gc.collect()
    gc.freeze()


def _emulator_host(variable: str) -> str:
    """An emulator's host:port from `variable`, or "" where the real API is used."""
    host = os.environ.get(variable, "").strip()
    if host and ("/" in host or ":" not in host):
        raise ConfigError(f"{variable}: expected host:port, got {host!r}")
    return host


@built_once
def notify_services() -> NotifyServices:
    """`on_notify` reads the records and keeps its ledger; it needs no Compute and no publisher."""
    from shared.adapters.clock import SystemClock
    from shared.adapters.firestore_store import FirestoreStore
    from shared.adapters.notification_channels import ConfiguredChannels
    from shared.adapters.notification_ledger import FirestoreNotificationLedger

    config = pipeline_config()
    store = FirestoreStore.from_environment(project_id())
    return NotifyServices(
        config=config,
        store=store,
        ledger=FirestoreNotificationLedger(store.client, rpc=store.rpc),
        channels=ConfiguredChannels(config, os.environ.get(ENV_NOTIFICATIONS_FILE, "").strip() or None),
        clock=SystemClock(),
    )


@built_once
def rollback_audience() -> tuple[str, ...]:
    """Every audience a rollback caller's token may carry (the rollback function's URL first)."""
    return _audiences(ENV_ROLLBACK_AUDIENCE, "the rollback function's URL")


@built_once
def dashboard_services() -> DashboardServices:
    """The dashboard reads the records and forwards actions; it holds no pipeline write access."""
    from shared.adapters.delivery_records import FirestoreDeliveryRecords
    from shared.adapters.pipeline_http import HttpPipelineEndpoints

    rollback_url = os.environ.get(ENV_DASHBOARD_ROLLBACK_URL, "").strip()
    if not rollback_url:
        raise ConfigError(f"{ENV_DASHBOARD_ROLLBACK_URL}: required (the rollback function's URL)")
    token_url = os.environ.get(ENV_DASHBOARD_LOCAL_TOKEN_URL, "").strip()
    return DashboardServices(
        config=pipeline_config(),
        records=FirestoreDeliveryRecords.from_environment(project_id()),
        endpoints=HttpPipelineEndpoints(),
        rollback_url=rollback_url,
        approve_url=os.environ.get(ENV_DASHBOARD_APPROVE_URL, "").strip(),
        local_token_url=token_url,
    )


@built_once
def promote_audience() -> tuple[str, ...]:
    """Every audience a promote caller's token may carry (the promote function's URL first)."""
    return _audiences(ENV_PROMOTE_AUDIENCE, "the promote function's URL")


@built_once
def approve_audience() -> tuple[str, ...]:
    """Every audience an approve caller's token may carry (the approve function's URL first)."""
    return _audiences(ENV_APPROVE_AUDIENCE, "the approve function's URL")


def _audiences(variable: str, what: str) -> tuple[str, ...]:
    audiences = parse_audiences(os.environ.get(variable, ""))
    if not audiences:
        raise ConfigError(
            f"{variable}: required ({what}, the token audience; more accepted audiences may follow, comma-separated)"
        )
    return audiences
