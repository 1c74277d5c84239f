"""A local function server runs the code as concurrently as one function instance on Google Cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
from functions_framework._http.gunicorn import GunicornApplication

from devstack import function_server
from devstack.eventarc import EventarcDelivery

SOURCE = """
import functions_framework


@functions_framework.cloud_event
def on_event(cloud_event):
    return None
"""


def test_a_local_function_server_has_a_thread_for_each_request_an_instance_serves_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # functions-framework's own default follows the machine (four threads per CPU, or THREADS).
    monkeypatch.setenv("THREADS", str(function_server.REQUESTS_AT_ONCE * 4))
    # Not main.py: functions-framework registers the source as a module under its file's name.
    source = tmp_path / "concurrency_probe.py"
    source.write_text(SOURCE)

    server = function_server.create_function_server("on_event", str(source))

    gunicorn = server.server_class(server.app, "127.0.0.1", 0, False, **server.options)
    assert isinstance(gunicorn, GunicornApplication)  # the server functions-framework runs in production
    assert gunicorn.cfg.threads == function_server.REQUESTS_AT_ONCE
    assert isinstance(server.app.wsgi_app, EventarcDelivery)
