"""What Eventarc does between a Pub/Sub topic and a 2nd-gen function, for the local stack.

On Google Cloud, Eventarc's own push subscription receives each message and delivers it to the
function as a binary-mode CloudEvent: headers `ce-type: google.cloud.pubsub.topic.v1.messagePublished`,
`ce-source: //pubsub.googleapis.com/projects/P/topics/T`, `ce-id` (the message id), `ce-time` (its
publish time), and the push body `{"message": {...}, "subscription": "projects/P/subscriptions/S"}`
as the event's data. Pub/Sub events carry no `subject`.

The Pub/Sub emulator can only push that body, with neither the topic nor CloudEvent headers, and
functions-framework's fallback conversion of such a body drops the subscription and names no
topic. So locally each push subscription points at `<function URL>/projects/P/topics/T`, and
`EventarcDelivery`, a WSGI layer in front of the real functions-framework app, turns the push
into the request Eventarc would have sent, on the root path. Handlers then see the same event
everywhere, and an event from a dead-letter topic says which topic it came from.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
PUBSUB_SERVICE = "pubsub.googleapis.com"
CLOUDEVENTS_SPEC_VERSION = "1.0"
_TOPIC_PATH = re.compile(r"^/(projects/[^/\s]+/topics/[^/\s]+)/?$")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def push_endpoint(function_url: str, project: str, topic: str) -> str:
    """Where a push subscription delivers `topic` to the function served at `function_url`.

    >>> push_endpoint("http://127.0.0.1:8001/", "hello-local", "notify")
    'http://127.0.0.1:8001/projects/hello-local/topics/notify'
    """
    return f"{function_url.rstrip('/')}/projects/{project}/topics/{topic}"


def topic_of_path(path: str) -> str | None:
    """The topic resource a push endpoint's path names, if it names one.

    >>> topic_of_path("/projects/hello-local/topics/notify-dead-letter")
    'projects/hello-local/topics/notify-dead-letter'
    >>> topic_of_path("/") is None, topic_of_path("/projects/p/topics/t/extra") is None
    (True, True)
    """
    match = _TOPIC_PATH.fullmatch(path)
    return match.group(1) if match else None


@dataclass(frozen=True)
class CloudEventRequest:
    """A binary-mode CloudEvent over HTTP: the `ce-*` and content headers, and the data as body."""

    headers: Mapping[str, str]
    body: bytes


def eventarc_request(push_body: bytes, topic: str) -> CloudEventRequest | None:
    """The request Eventarc delivers for a Pub/Sub push body from `topic`; None if it is not one.

    >>> push = {"message": {"data": "aGk=", "messageId": "7", "publishTime": "2026-01-01T00:00:00Z"},
    ...         "subscription": "projects/p/subscriptions/s"}
    >>> request = eventarc_request(json.dumps(push).encode(), "projects/p/topics/t")
    >>> request.headers["ce-source"], request.headers["ce-id"], request.headers["ce-time"]
    ('//pubsub.googleapis.com/projects/p/topics/t', '7', '2026-01-01T00:00:00Z')
    >>> data = json.loads(request.body)
    >>> data["subscription"], data["message"]["message_id"], data["message"]["publish_time"]
    ('projects/p/subscriptions/s', '7', '2026-01-01T00:00:00Z')
    >>> eventarc_request(b'{"message": "not a message"}', "projects/p/topics/t") is None
    True
    """
    try:
        envelope = json.loads(push_body)
    except ValueError:  # permanent: not JSON, so not a push; the function answers it as it would
        return None
    if not isinstance(envelope, dict):
        return None
    message, subscription = envelope.get("message"), envelope.get("subscription")
    if not isinstance(message, dict) or not isinstance(subscription, str):
        return None
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        return None
    publish_time = message.get("publishTime") or message.get("publish_time")
    # Eventarc's message carries each of these under both spellings.
    message = {**message, "messageId": message_id, "message_id": message_id}
    headers = {
        "ce-specversion": CLOUDEVENTS_SPEC_VERSION,
        "ce-type": MESSAGE_PUBLISHED,
        "ce-source": f"//{PUBSUB_SERVICE}/{topic}",
        "ce-id": message_id,
        "content-type": "application/json; charset=utf-8",
    }
    if isinstance(publish_time, str) and publish_time:
        message |= {"publishTime": publish_time, "publish_time": publish_time}
        headers["ce-time"] = publish_time
    body = json.dumps({"message": message, "subscription": subscription}).encode("utf-8")
    return CloudEventRequest(headers=headers, body=body)


class EventarcDelivery:
    """WSGI layer in front of a function: a push to `/projects/P/topics/T` reaches the function as
    the CloudEvent Eventarc would deliver, on `/`. Every other request passes through untouched."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        topic = topic_of_path(environ.get("PATH_INFO", ""))
        if topic is not None and environ.get("REQUEST_METHOD") == "POST":
            body = _read_body(environ)
            request = eventarc_request(body, topic)
            environ["PATH_INFO"] = "/"
            if request is None:
                # Not a push body: the function answers it as on GCP (400 for a non-event).
                environ["wsgi.input"] = io.BytesIO(body)
            else:
                _replace_body(environ, request)
        return self.app(environ, start_response)


def _read_body(environ: Mapping[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:  # permanent: a malformed length; read what the stream holds
        length = 0
    return bytes(stream.read(length) if length > 0 else stream.read())


def _replace_body(environ: dict[str, Any], request: CloudEventRequest) -> None:
    for name, value in request.headers.items():
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ["CONTENT_LENGTH"] = str(len(request.body))
    environ["wsgi.input"] = io.BytesIO(request.body)
