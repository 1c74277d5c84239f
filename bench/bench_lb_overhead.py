"""Latency added by the Compute emulator's load balancer: the same instance, direct and through it.

Starts its own emulator, deploys a one-instance group behind a backend service, then sends
sequential keep-alive GETs over loopback to the instance and to the load balancer.

The upstream is a minimal app that writes each response in one piece. (An app that writes headers
and body separately on a keep-alive connection, as http.server does unbuffered, meets Nagle's
algorithm and delayed ACKs: about 40 ms per request either way, which would hide the proxy's cost.)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from compute_emulator.launcher import EmulatorProcess
from google.cloud import compute_v1

from shared.artifact import build_artifact

from .compute_setup import (
    HEALTH_CHECK_URL,
    PROJECT,
    TEMPLATE_URL,
    ZONE,
    client_options,
    create_template_and_health_check,
)

WARM_UP_REQUESTS = 100
MEASURED_REQUESTS = 1000
HEALTHY_TIMEOUT_SECONDS = 60.0


BENCH_APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = (os.environ.get("RELEASE_VERSION", "unknown") + "\\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # one write per response

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def build_bench_app(workdir: Path) -> Path:
    source = workdir / "lb-bench-app"
    source.mkdir()
    (source / "app.py").write_text(BENCH_APP)
    (source / "Procfile").write_text("web: python3 app.py\n")
    return build_artifact(source, workdir / "dist")


def deploy_one_instance(options: dict[str, Any], artifact: Path) -> str:
    """Template, health check (1 s interval) and a one-instance group; returns its instanceGroup URL."""
    create_template_and_health_check(options, artifact)
    groups = compute_v1.InstanceGroupManagersClient(**options)
    groups.insert(
        project=PROJECT,
        zone=ZONE,
        instance_group_manager_resource=compute_v1.InstanceGroupManager(
            name="bench",
            base_instance_name="bench",
            instance_template=TEMPLATE_URL,
            target_size=1,
            named_ports=[compute_v1.NamedPort(name="http", port=8080)],
        ),
    ).result(timeout=30)
    return str(groups.get(project=PROJECT, zone=ZONE, instance_group_manager="bench").instance_group)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(url: str) -> list[float]:
    with requests.Session() as session:
        for _ in range(WARM_UP_REQUESTS):
            session.get(url, timeout=10).raise_for_status()
        samples = []
        for _ in range(MEASURED_REQUESTS):
            started = time.perf_counter()
            response = session.get(url, timeout=10)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return samples


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-lb-") as tmp:
        artifact = build_bench_app(Path(tmp))
        with EmulatorProcess.start(Path(tmp) / "emulator") as emulator:
            options = client_options(emulator.endpoint)
            group = deploy_one_instance(options, artifact)
            services = compute_v1.BackendServicesClient(**options)
            services.insert(
                project=PROJECT,
                backend_service_resource=compute_v1.BackendService(
                    name="bench",
                    health_checks=[HEALTH_CHECK_URL],
                    backends=[compute_v1.Backend(group=group)],
                ),
            ).result(timeout=30)
            deadline = time.monotonic() + HEALTHY_TIMEOUT_SECONDS
            port = 0
            while not port:
                health = services.get_health(
                    project=PROJECT,
                    backend_service="bench",
                    resource_group_reference_resource=compute_v1.ResourceGroupReference(group=group),
                )
                healthy = [s for s in health.health_status if s.health_state == "HEALTHY"]
                port = healthy[0].port if healthy else 0
                if not port:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the benchmark instance never became HEALTHY")
                    time.sleep(0.1)
            balancers = requests.get(
                f"{emulator.endpoint}/emulator/v1/projects/{PROJECT}/load-balancers", timeout=10
            )
            lb_url = balancers.json()["items"][0]["url"]

            direct = measure(f"http://127.0.0.1:{port}/")
            proxied = measure(f"{lb_url}/")

    rows = [("direct to the instance", direct), ("through the load balancer", proxied)]
    print(
        f"Load balancer overhead: sequential keep-alive GET /, {MEASURED_REQUESTS} requests each (loopback)"
    )
    print(f"{'path':<28}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for label, samples in rows:
        print(
            f"{label:<28}{percentile(samples, 0.50):>10.3f}{percentile(samples, 0.99):>10.3f}"
            f"{statistics.fmean(samples):>10.3f}"
        )
    p50_ratio = percentile(proxied, 0.50) / percentile(direct, 0.50)
    p99_ratio = percentile(proxied, 0.99) / percentile(direct, 0.99)
    print(f"{'ratio (proxy / direct)':<28}{p50_ratio:>9.2f}x{p99_ratio:>9.2f}x")
    added = percentile(proxied, 0.50) - percentile(direct, 0.50)
    print(f"{'added at p50':<28}{added:>10.3f}")


if __name__ == "__main__":
    main()
