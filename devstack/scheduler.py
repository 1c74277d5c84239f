"""A local stand-in for the Cloud Scheduler job that publishes the watchdog tick.

On GCP a Cloud Scheduler job publishes to `watchdog-tick` every minute. Locally deadlines are
short, so this process publishes every few seconds to the Pub/Sub emulator (PUBSUB_EMULATOR_HOST).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devstack.processes import stop_requested
from shared.config import ENV_PROJECT
from shared.topology import WATCHDOG_TICK


def publish(emulator_host: str, project: str, topic: str, payload: dict[str, str]) -> None:
    body = json.dumps(
        {"messages": [{"data": base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii")}]}
    ).encode("utf-8")
    request = urllib.request.Request(
        f"http://{emulator_host}/v1/projects/{project}/topics/{topic}:publish",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def run(emulator_host: str, project: str, topic: str, interval: float, ready_file: Path | None) -> None:
    stopping = stop_requested()
    sys.stderr.write(f"scheduler: publishing to {topic} every {interval:g} s\n")
    # The first tick goes out at once: it proves the topic is reachable before `up` reports ready.
    while True:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        try:
            publish(emulator_host, project, topic, {"scheduled_at": now})
        except (urllib.error.URLError, OSError) as exc:
            # A missed tick is harmless (the next one comes soon); keep ticking.
            sys.stderr.write(f"scheduler: publish failed: {exc}\n")
        else:
            if ready_file is not None and not ready_file.exists():
                ready_file.touch()
        if stopping.wait(interval):
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", default=os.environ.get(ENV_PROJECT), required=False)
    parser.add_argument("--topic", default=WATCHDOG_TICK)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between ticks")
    parser.add_argument("--ready-file", type=Path, help="created once the first tick is published")
    args = parser.parse_args(argv)
    emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not emulator_host or not args.project:
        parser.error("PUBSUB_EMULATOR_HOST and a project (--project or GOOGLE_CLOUD_PROJECT) are required")
    run(emulator_host, args.project, args.topic, args.interval, args.ready_file)


if __name__ == "__main__":
    main()
