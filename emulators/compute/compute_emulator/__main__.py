"""`python -m compute_emulator --host H --port P --state-dir DIR` (also `compute-emulator`)."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from .api import build_app
from .api_common import OPERATION_WAIT_SECONDS
from .instances import watch_children_with_pidfds
from .state import Emulator

LOG = logging.getLogger("compute_emulator")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="compute-emulator",
        description="Serve a local subset of the Compute Engine v1 REST API with real instances and load balancers.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port for the REST API; 0 picks a free one")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="directory for instance work dirs (instances/) and per-instance logs (logs/); default: a new temp dir",
    )
    parser.add_argument(
        "--async-operations",
        action="store_true",
        help="answer mutations with the operation still PENDING instead of waiting until it is DONE",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="compute-emulator-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    watch_children_with_pidfds(asyncio.get_running_loop())
    emulator = Emulator(state_dir.resolve())
    # Whatever happens to the event loop, no instance process may outlive the emulator.
    atexit.register(emulator.kill_everything_now)
    app = build_app(emulator, reply_wait=0.0 if args.async_operations else OPERATION_WAIT_SECONDS)
    # In-flight API calls (an operation wait can last minutes) get a short grace on shutdown.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The Compute message classes that check requests are about 250,000 objects alive as long as
    # the emulator; frozen, a full collection no longer walks them (about 190 ms of the event loop
    # each time one ran, with every API call and probe waiting).
    gc.collect()
    gc.freeze()
    print(f"compute emulator listening on http://{args.host}:{port} (state in {state_dir})", flush=True)
    await stop.wait()
    LOG.info("stopping: ending every instance's process tree")
    await runner.cleanup()
    await emulator.shutdown()
    LOG.info("stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(args))
    # Everything is closed by now. Skip interpreter teardown: unloading the Compute message
    # classes (used for request validation) takes seconds, and callers wait for our exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
