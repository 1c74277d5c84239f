"""Browser harness: Debian's Chromium, headless, driven by Selenium through Debian's chromedriver
(no browser or driver is ever downloaded), against a local stack of this module's own.

The stack serves app `shop` (the sample app's settings under another name), so these tests
never change what the end-to-end tests expect of app `hello`.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.cloud import firestore

from devstack.processes import environment_applied
from devstack.stack import DEFAULT_PIPELINE_TEMPLATE, Stack
from releasectl.remote import build_message, publish_build_succeeded
from shared.artifact import build_artifact, sha256_of_url
from shared.domain.identifiers import deployment_id_for
from tests.conftest import TEST_PROJECT

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / "test-artifacts"))
"""Screenshots the tests keep (ignored by git)."""
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APP = "shop"
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return (
                f"{path} is missing: install Debian's {package} (apt-get install -y chromium chromium-driver)"
            )
    return None


def new_browser(user_data_dir: Path, *, javascript: bool = True) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    # Both paths given: Selenium Manager has nothing to find and downloads nothing.
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    driver = new_browser(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser_without_javascript(tmp_path: Path) -> Iterator[Any]:
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    driver = new_browser(tmp_path / "chromium-profile-nojs", javascript=False)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Shop:
    """The module's stack and what a test does with it, as CI and people do."""

    stack: Stack
    db: firestore.Client
    artifact: str

    @property
    def dashboard_url(self) -> str:
        return self.stack.env["RELEASECTL_DASHBOARD_URL"]

    def publish(
        self, environment: str, message: str, *, committed_minutes_ago: float = 10, **extra: Any
    ) -> str:
        """Publish a build as CI does (its commit made some minutes ago); returns the deployment id."""
        build_id = f"browser-{uuid.uuid4().hex[:8]}"
        committed_at = datetime.now(UTC) - timedelta(minutes=committed_minutes_ago)
        data, attributes = build_message(
            app=APP,
            environment=environment,
            commit=(uuid.uuid4().hex + uuid.uuid4().hex)[:40],
            build_id=build_id,
            artifact=self.artifact,
            artifact_sha256=sha256_of_url(self.artifact),
            committed_at=committed_at.isoformat(timespec="seconds"),
            commit_messages=[message],
            **extra,
        )
        publish_build_succeeded(data, attributes)
        return deployment_id_for(APP, environment, build_id)

    def status(self, deployment_id: str) -> str | None:
        snapshot = self.db.collection("deployments").document(deployment_id).get()
        return (snapshot.to_dict() or {}).get("status") if snapshot.exists else None

    def wait_status(self, deployment_id: str, *statuses: str, timeout: float = 120) -> str:
        return wait_for(
            lambda: status if (status := self.status(deployment_id)) in statuses else None,
            timeout,
            f"{deployment_id} to be {'/'.join(statuses)}",
            interval=0.25,
        )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    if chromium_missing():
        pytest.skip(str(chromium_missing()))
    workdir = tmp_path_factory.mktemp("browser-stack")
    template = workdir / "pipeline.toml"
    text = DEFAULT_PIPELINE_TEMPLATE.read_text(encoding="utf-8")
    for old, new in (("[apps.hello", f"[apps.{APP}"), ("hello-", f"{APP}-"), ("lb_hello_", f"lb_{APP}_")):
        text = text.replace(old, new)
    template.write_text(text, encoding="utf-8")
    stack = Stack(workdir / "state", project=TEST_PROJECT, pipeline_template=template, fixed_ports={})
    stack.start()
    try:
        with environment_applied(stack.env):
            artifact = build_artifact(REPO_ROOT / "examples" / "hello", workdir / "dist")
            yield Shop(stack=stack, db=firestore.Client(project=TEST_PROJECT), artifact=f"file://{artifact}")
    finally:
        stack.stop()


def keep_screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / name
    driver.save_screenshot(str(path))
    return path


def copy_to(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
