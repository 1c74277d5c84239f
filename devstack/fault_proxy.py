"""`python -m devstack.fault_proxy --port P --target HOST:PORT [--error-rate R ...]`: a small HTTP
proxy that injects transient faults, for soak tests of the pipeline against the Compute API.

Placed between the functions and the Compute emulator (the functions' COMPUTE_EMULATOR_HOST names
the proxy), it forwards each request and, at the given rates, instead
  - answers 503 in Google's error shape, before forwarding (the request never happened);
  - drops the connection before forwarding, or after forwarding (the request happened, the caller
    never hears of it: a retried insert then finds its own resource);
  - adds latency before forwarding.
These are the faults a real Compute API shows; a pipeline that treats them as transient and stays
idempotent comes through them. `GET /_fault_proxy/stats` (never forwarded) answers the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
from collections import Counter
from dataclasses import dataclass

import aiohttp
from aiohttp import web

STATS_PATH = "/_fault_proxy/stats"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass(frozen=True)
class FaultRates:
    error: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    latency: float = 0.0
    max_latency_seconds: float = 1.0

    def __post_init__(self) -> None:
        rates = (self.error, self.drop_before, self.drop_after, self.latency)
        if (
            any(not 0.0 <= rate <= 1.0 for rate in rates)
            or self.error + self.drop_before + self.drop_after > 1
        ):
            raise ValueError(f"fault rates must be within 0..1 and the exclusive ones sum to <= 1: {self}")


class FaultProxy:
    def __init__(self, target: str, rates: FaultRates, seed: int | None = None) -> None:
        self.target = target
        self.rates = rates
        self.random = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == STATS_PATH:
            return web.json_response(dict(self.stats))
        self.stats["requests"] += 1
        if self.random.random() < self.rates.latency:
            self.stats["delayed"] += 1
            await asyncio.sleep(self.random.uniform(0.05, self.rates.max_latency_seconds))
        roll = self.random.random()
        if roll < self.rates.error:
            self.stats["answered_503"] += 1
            error = {"error": {"code": 503, "message": "injected fault: try again", "status": "UNAVAILABLE"}}
            return web.json_response(error, status=503)
        roll -= self.rates.error
        if roll < self.rates.drop_before:
            self.stats["dropped_before"] += 1
            return self._drop(request)
        roll -= self.rates.drop_before
        drop_after = roll < self.rates.drop_after
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        session = await self._client()
        try:
            async with session.request(
                request.method,
                f"http://{self.target}{request.path_qs}",
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=300),
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                upstream_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        except (aiohttp.ClientError, TimeoutError) as exc:  # the target is down: say so, as a gateway would
            self.stats["upstream_failed"] += 1
            return web.Response(status=502, text=f"fault proxy: upstream failed: {exc}")
        if drop_after:
            self.stats["dropped_after"] += 1
            return self._drop(request)
        self.stats["forwarded"] += 1
        return web.Response(body=payload, status=status, headers=upstream_headers)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        # Never sent: the connection is already gone.
        return web.Response(status=599)


async def serve(args: argparse.Namespace) -> None:
    rates = FaultRates(
        error=args.error_rate,
        drop_before=args.drop_before_rate,
        drop_after=args.drop_after_rate,
        latency=args.latency_rate,
        max_latency_seconds=args.max_latency,
    )
    proxy = FaultProxy(args.target, rates, args.seed)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"fault proxy on http://{args.host}:{args.port} -> {args.target}: {rates}", flush=True)
    await stop.wait()
    print(f"fault proxy stopping: {json.dumps(dict(proxy.stats))}", flush=True)
    await runner.cleanup()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.fault_proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share answered 503")
    parser.add_argument("--drop-before-rate", type=float, default=0.0, help="share dropped unforwarded")
    parser.add_argument("--drop-after-rate", type=float, default=0.0, help="share dropped after forwarding")
    parser.add_argument("--latency-rate", type=float, default=0.0, help="share delayed")
    parser.add_argument("--max-latency", type=float, default=1.0, help="longest added delay, seconds")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
