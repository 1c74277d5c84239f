"""`python -m devstack.function_server --source FILE --target NAME --host H --port P`: serve one
function as the `functions-framework` command does (same app, same server), with Eventarc's
delivery in front of it (`devstack.eventarc`), so Pub/Sub pushes reach it as they do on GCP."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import functions_framework

# The server functions-framework's own command runs the app with (gunicorn where available).
from functions_framework._http import HTTPServer, create_server

from devstack.eventarc import EventarcDelivery

REQUESTS_AT_ONCE = 8
"""Requests a local function server serves at once, each on a thread of its own, as an instance
on Google Cloud does with Terraform's default `function_request_concurrency` (tests/infra holds
the two together). By itself functions-framework's server starts four threads per CPU it sees,
so a bigger machine would run the code more concurrently than Google Cloud does."""


def create_function_server(target: str, source: str) -> HTTPServer:
    """functions-framework's server for `target` of `source`, not yet bound."""
    app = functions_framework.create_app(target, source)
    app.wsgi_app = EventarcDelivery(app.wsgi_app)
    return create_server(app, False, threads=REQUESTS_AT_ONCE)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.function_server", description=__doc__)
    parser.add_argument("--source", required=True, help="the functions source file, e.g. main.py")
    parser.add_argument("--target", required=True, help="the entry point to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    create_function_server(args.target, args.source).run(args.host, args.port)


if __name__ == "__main__":
    main()
