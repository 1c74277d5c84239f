"""End-to-end harness: the pipeline on `local_stack` (real functions-framework servers, push
subscriptions, Pub/Sub and Firestore emulators, Compute emulator with real instances and load
balancers). Tests talk to it only as CircleCI and operators do: publish, HTTP, read records."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1, firestore, pubsub_v1  # type: ignore[attr-defined]

from devstack.processes import environment_applied
from devstack.sample_releases import unhealthy_app
from shared.artifact import ArtifactError, build_artifact, sha256_of_url
from shared.config import PipelineConfig
from shared.domain.identifiers import deployment_id_for
from shared.topology import BUILD_SUCCEEDED

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

STORY_MODULE = "test_release_pipeline.py"
"""The module that tells the story from an empty stack: its first build must be `hello`'s first
release (1.0.0) and it leaves production live for the modules after it. The other modules share
the session's stack and only add releases, so the story runs first and the rest in file order."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    e2e = [index for index, item in enumerate(items) if item.path.parent == here]
    ordered = sorted((items[i] for i in e2e), key=lambda item: item.path.name != STORY_MODULE)
    for index, item in zip(e2e, ordered, strict=True):  # other directories keep their places
        items[index] = item


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def new_commit() -> str:
    return (uuid.uuid4().hex + uuid.uuid4().hex)[:40]


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    bodies: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


class Load:
    """Back-to-back GETs on a URL from a few threads until stopped (bounded by `max_seconds`)."""

    def __init__(self, url: str, workers: int = 3, max_seconds: float = 180.0) -> None:
        self.url = url
        self.workers = workers
        self.max_seconds = max_seconds
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                response = session.get(self.url, timeout=5)
                outcome = (response.status_code, response.text.strip())
            except requests.RequestException as exc:
                outcome = (0, type(exc).__name__)
            with self._lock:
                if outcome[0] == 200:
                    self.result.ok += 1
                    self.result.bodies[outcome[1]] = self.result.bodies.get(outcome[1], 0) + 1
                else:
                    self.result.failures.append(f"{outcome[0]} {outcome[1][:80]}")

    def __enter__(self) -> Load:
        for _ in range(self.workers):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


@dataclass
class Pipeline:
    """What a test needs from the running stack."""

    stack: Any
    config: PipelineConfig
    publisher: pubsub_v1.PublisherClient
    db: firestore.Client
    groups: compute_v1.RegionInstanceGroupManagersClient
    project: str
    artifacts: dict[str, str]

    def url(self, environment: str, app: str = "hello") -> str:
        return str(self.stack.url(app, environment))

    def publish_raw(self, data: bytes, attributes: Mapping[str, str]) -> str:
        topic = self.publisher.topic_path(self.project, BUILD_SUCCEEDED)
        return str(self.publisher.publish(topic, data, **dict(attributes)).result(timeout=30))

    def publish_build(
        self,
        environment: str,
        commit: str,
        build_id: str,
        *,
        artifact: str = "hello",
        messages: list[str] | None = None,
        app: str = "hello",
        **extra: Any,
    ) -> str:
        """Publish a build-succeeded event as CircleCI does; returns the deployment id it makes.

        The digest is the artifact file's own unless `artifact_sha256` says otherwise (None: left out).
        """
        url = self.artifacts.get(artifact, artifact)
        body = {
            "app": app,
            "environment": environment,
            "commit": commit,
            "build_id": build_id,
            "artifact": url,
            "artifact_sha256": artifact_digest(url),
            "commit_messages": messages or [],
            **extra,
        }
        body = {key: value for key, value in body.items() if value is not None}
        self.publish_raw(json.dumps(body).encode(), {"app": app, "environment": environment})
        return deployment_id_for(app, environment, build_id)

    def deployment(self, deployment_id: str) -> dict[str, Any] | None:
        snapshot = self.db.collection("deployments").document(deployment_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def document(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        snapshot = self.db.collection(collection).document(doc_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def wait_status(self, deployment_id: str, *statuses: str, timeout: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            doc = self.deployment(deployment_id)
            return doc if doc and doc["status"] in statuses else None

        try:
            return wait_for(reached, timeout, f"{deployment_id} to be {'/'.join(statuses)}", interval=0.25)
        except AssertionError as exc:
            doc = self.deployment(deployment_id) or {}
            story = [(h["status"], h.get("detail")) for h in doc.get("history", [])]
            environment = self.environment(doc.get("environment", "staging"))
            raise AssertionError(f"{exc}; history {story}; environment {environment}") from None

    def environment(self, environment: str, app: str = "hello") -> dict[str, Any]:
        return self.document("environments", f"{app}@{environment}") or {}

    def serving(self, environment: str) -> str:
        response = requests.get(self.url(environment), timeout=5)
        response.raise_for_status()
        return response.text.strip()

    def group_exists(self, environment: str, name: str) -> bool:
        from google.api_core import exceptions

        region = self.config.apps["hello"].environments[environment].region
        try:
            self.groups.get(project=self.project, region=region, instance_group_manager=name)
        except exceptions.NotFound:
            return False
        return True

    def group_names(self, environment: str) -> list[str]:
        region = self.config.apps["hello"].environments[environment].region
        return [m.name for m in self.groups.list(project=self.project, region=region)]

    def notifications(self) -> list[dict[str, Any]]:
        path = Path(self.stack.notifications_file)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def token(self, email: str | None = None, audience: str | None = None) -> str:
        from devstack.token_issuer import mint_token

        issuer = self.stack.function_env["ID_TOKEN_ISSUERS"]
        return mint_token(issuer, audience or self.stack.env["ROLLBACK_AUDIENCE"], email)

    def rollback(
        self, body: Any, token: str | None, content_type: str = "application/json"
    ) -> requests.Response:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(
            self.stack.env["RELEASECTL_ROLLBACK_URL"], data=data, headers=headers, timeout=30
        )

    def call(
        self, function: str, body: Any, email: str | None = None, token: str | None = None
    ) -> requests.Response:
        """POST to one of the HTTP functions (`promote`, `approve`) as `email` (default: the local
        developer), with a token minted for that function's audience."""
        url = self.stack.env[f"RELEASECTL_{function.upper()}_URL"]
        bearer = token or self.token(email, audience=self.stack.env[f"{function.upper()}_AUDIENCE"])
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
        return requests.post(url, data=data, headers=headers, timeout=30)


def artifact_digest(url: str) -> str:
    """What CI would send: the SHA-256 of the file; for a file that does not exist, of its URL."""
    try:
        return sha256_of_url(url)
    except ArtifactError:  # a test of a missing artifact: any well-formed digest will do
        return hashlib.sha256(url.encode()).hexdigest()


@pytest.fixture(scope="session")
def pipeline(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with environment_applied(local_stack.env):
        tmp = tmp_path_factory.mktemp("e2e-artifacts")
        unhealthy = unhealthy_app(tmp / "unhealthy")
        artifacts = {
            "hello": f"file://{build_artifact(REPO_ROOT / 'examples' / 'hello', tmp / 'dist')}",
            "unhealthy": f"file://{build_artifact(unhealthy, tmp / 'dist')}",
        }
        compute_host = local_stack.env["COMPUTE_EMULATOR_HOST"]
        groups = compute_v1.RegionInstanceGroupManagersClient(
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=f"http://{compute_host}"),
        )
        project = local_stack.env["GOOGLE_CLOUD_PROJECT"]
        yield Pipeline(
            stack=local_stack,
            config=local_stack.config,
            publisher=pubsub_v1.PublisherClient(),
            db=firestore.Client(project=project),
            groups=groups,
            project=project,
            artifacts=artifacts,
        )
