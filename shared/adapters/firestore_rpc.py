"""Firestore point reads, read-write transactions and conditional writes through the library's
generated client.

Every pipeline step reads its records and changes them in a transaction, and every notification
changes its ledger record a few times with writes conditional on its update time: the hot path
of the whole pipeline. The `google-cloud-firestore` document and transaction objects cost the
functions more CPU than the RPCs themselves: each read is a streamed batch get whose document is
built into a snapshot and deep-copied twice, and a merge write derives a field path object for
every leaf of the document.

Here the same library's generated client (`FirestoreClient`, the RPCs as Google defines them)
carries plain protobuf messages: outside a transaction a document is read with one unary
`GetDocument`, inside one with a batch get, each decoded straight from its values; a write
replaces the top-level fields it names (its update mask), leaving every other field alone.

A transaction runs as the library runs one: `BeginTransaction` first, so its id is known before
any read takes a lock; a commit that Firestore aborts for contention runs the work again in a
transaction that names the aborted one (`retry_transaction`); anything else rolls it back with
the client's own retry. A transaction left open holds what it read until Firestore expires it
(a minute idle on the emulator), and every writer of those documents waits in vain meanwhile.
`python -m bench firestore` prints both ways' costs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions as google_exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.services.firestore import FirestoreClient
from google.cloud.firestore_v1.services.firestore.transports import FirestoreGrpcTransport
from google.cloud.firestore_v1.types import document, write
from google.cloud.firestore_v1.types import firestore as firestore_requests

T = TypeVar("T")

_Value = document.Value.pb()
_Write = write.Write.pb()

_PLAIN_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A field name Firestore takes unquoted in a field path (ASCII only)."""

EMULATOR_HOST_VARIABLE = "FIRESTORE_EMULATOR_HOST"
_EMULATOR_CREDENTIALS = ("authorization", "Bearer owner")
"""What the library sends the emulator: the owner's access, past any security rules."""


class UnsupportedValue(TypeError):
    """A value the pipeline's documents never hold (references, geo points); a bug to report."""


def encode_value(value: Any) -> Any:
    """A Python value as a Firestore `Value` message.

    >>> encode_value({"n": 1, "ok": True, "tags": ["a"]}).map_value.fields["tags"].array_value.values[0].string_value
    'a'
    """
    encoded = _Value()
    if value is None:
        encoded.null_value = 0
    elif isinstance(value, bool):  # before int: a bool is an int too
        encoded.boolean_value = value
    elif isinstance(value, int):
        encoded.integer_value = value
    elif isinstance(value, float):
        encoded.double_value = value
    elif isinstance(value, str):
        encoded.string_value = value
    elif isinstance(value, bytes):
        encoded.bytes_value = value
    elif isinstance(value, datetime):
        # Firestore keeps UTC instants; a datetime without a zone is taken as UTC, as the library does.
        encoded.timestamp_value.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    elif isinstance(value, Mapping):
        fields = encoded.map_value.fields
        for key, item in value.items():
            fields[str(key)].CopyFrom(encode_value(item))
        if not value:
            encoded.map_value.SetInParent()
    elif isinstance(value, (list, tuple)):
        encoded.array_value.values.extend(encode_value(item) for item in value)
        if not value:
            encoded.array_value.SetInParent()
    else:
        raise UnsupportedValue(f"cannot store {type(value).__name__} in Firestore: {value!r}")
    return encoded


def decode_value(value: Any) -> Any:
    """A Firestore `Value` message as the Python value it holds (timestamps as aware UTC datetimes).

    >>> decode_value(encode_value({"at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "n": [1.5, None]}))
    {'at': datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc), 'n': [1.5, None]}
    """
    kind = value.WhichOneof("value_type")
    if kind == "string_value":
        return value.string_value
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=UTC)
    if kind == "integer_value":
        return value.integer_value
    if kind == "boolean_value":
        return value.boolean_value
    if kind == "map_value":
        return decode_fields(value.map_value.fields)
    if kind == "array_value":
        return [decode_value(item) for item in value.array_value.values]
    if kind == "null_value" or kind is None:
        return None
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return value.bytes_value
    raise UnsupportedValue(f"the pipeline does not read Firestore {kind} values")


def decode_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: decode_value(value) for key, value in fields.items()}


def field_write(path: str, data: Mapping[str, Any]) -> Any:
    """The write that sets each top-level field of `data` on the document at `path`, whole.

    A field whose value is `firestore.DELETE_FIELD` is deleted; fields `data` does not name are
    left as they are (the document is created if it does not exist).

    >>> w = field_write("projects/p/databases/(default)/documents/c/d", {"a": 1, "gone": firestore.DELETE_FIELD})
    >>> sorted(w.update_mask.field_paths), list(w.update.fields)
    (['a', 'gone'], ['a'])
    """
    return _write_message(path, data, top_level_paths(data))


def top_level_paths(data: Mapping[str, Any]) -> list[str]:
    """The field mask that replaces each top-level field of `data` whole and leaves the others."""
    return [_field_path(key) for key in data]


def _write_message(path: str, data: Mapping[str, Any], field_paths: Sequence[str] | None) -> Any:
    """A `Write` of `data` to the document at `path`: of the fields `field_paths` names when
    given (a `firestore.DELETE_FIELD` value among them deletes its field), else of the whole
    document."""
    encoded = _Write()
    encoded.update.name = path
    fields = encoded.update.fields
    for key, value in data.items():
        if value is not firestore.DELETE_FIELD:
            fields[key].CopyFrom(encode_value(value))
    if field_paths is not None:
        encoded.update_mask.field_paths.extend(field_paths)
    return encoded


def field_path(*names: str) -> str:
    """The field path of a field nested under `names`, each quoted where it needs to be.

    >>> field_path("channels", "slack:#releases")
    'channels.`slack:#releases`'
    """
    return ".".join(_field_path(name) for name in names)


def _field_path(key: str) -> str:
    """A top-level field name as a field path: backquoted unless it is a plain identifier.

    >>> _field_path("status"), _field_path("cleanup-due"), _field_path("café"), _field_path("a`b")
    ('status', '`cleanup-due`', '`café`', '`a\\\\`b`')
    """
    if _PLAIN_FIELD_NAME.fullmatch(key):
        return key
    return "`" + key.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True, order=True)
class UpdateTime:
    """When Firestore last wrote a document, to the nanosecond, as it reported it: a write whose
    precondition names it succeeds only if nobody wrote the document since (a datetime would
    lose the nanoseconds and never match)."""

    seconds: int
    nanos: int

    @classmethod
    def of(cls, timestamp: Any) -> UpdateTime:
        return cls(timestamp.seconds, timestamp.nanos)


class TransactionReads:
    """The reads of one attempt of a read-write transaction."""

    def __init__(self, rpc: FirestoreRpc, transaction: bytes) -> None:
        self._rpc = rpc
        self.transaction = transaction

    def get(self, path: str) -> dict[str, Any] | None:
        """The document at `path` as of this transaction (None if it does not exist). Firestore
        holds it, existing or not, until the transaction ends: a concurrent writer waits, and a
        concurrent transaction that read it conflicts. A batch get, as the library reads in a
        transaction: it answers a missing document as `missing` rather than with an error."""
        return self.get_all([path])[path]

    def get_all(self, paths: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Each document of `paths` as `get` reads it, in one batch get: path → fields or None."""
        request = firestore_requests.BatchGetDocumentsRequest(
            database=self._rpc.database, documents=list(paths), transaction=self.transaction
        )
        documents: dict[str, dict[str, Any] | None] = dict.fromkeys(paths)
        for response in self._rpc.batch_get(request):
            raw = firestore_requests.BatchGetDocumentsResponse.pb(response)
            if raw.HasField("found"):
                if raw.found.name not in documents:  # Firestore names a document as it was asked for
                    raise ValueError(f"Firestore answered {raw.found.name!r}, not one of {list(paths)}")
                documents[raw.found.name] = decode_fields(raw.found.fields)
        return documents


class FirestoreRpc:
    """Point reads and read-write transactions on one Firestore database."""

    def __init__(
        self, client: FirestoreClient, project: str, metadata: Iterable[tuple[str, str]] = ()
    ) -> None:
        self._client = client
        self.database = f"projects/{project}/databases/(default)"
        # The library sends the database as a resource prefix on every call; so does this.
        self._metadata = (("google-cloud-resource-prefix", self.database), *metadata)

    @classmethod
    def for_project(cls, project: str) -> FirestoreRpc:
        """At FIRESTORE_EMULATOR_HOST when set (anonymously, as the library connects there), else
        Firestore itself with the application's default credentials."""
        host = os.environ.get(EMULATOR_HOST_VARIABLE)
        if host:
            transport = FirestoreGrpcTransport(channel=grpc.insecure_channel(host))
            return cls(FirestoreClient(transport=transport), project, [_EMULATOR_CREDENTIALS])
        return cls(FirestoreClient(), project)

    def document_path(self, collection: str, document_id: str) -> str:
        return f"{self.database}/documents/{collection}/{document_id}"

    def batch_get(self, request: Any) -> Iterable[Any]:
        return self._client.batch_get_documents(request=request, metadata=self._metadata)

    def read(self, path: str) -> dict[str, Any] | None:
        """The document at `path`, or None. One unary `GetDocument`: half the CPU of a streamed
        batch get of one document."""
        return self.read_versioned(path)[0]

    def read_versioned(self, path: str) -> tuple[dict[str, Any] | None, UpdateTime | None]:
        """The document at `path` and its update time; (None, None) if it does not exist."""
        try:
            found = self._client.get_document(
                request=firestore_requests.GetDocumentRequest(name=path), metadata=self._metadata
            )
        except google_exceptions.NotFound:  # expected: the document does not exist
            return None, None
        raw = document.Document.pb(found)
        return decode_fields(raw.fields), UpdateTime.of(raw.update_time)

    def write(
        self,
        path: str,
        data: Mapping[str, Any],
        *,
        field_paths: Sequence[str] | None = None,
        exists: bool | None = None,
        last_update: UpdateTime | None = None,
    ) -> UpdateTime:
        """Write one document outside any transaction and return its new update time.

        `field_paths` names the fields to set from `data` (nested ones too, see `field_path`), the
        others staying as they are; without it the document becomes `data`. The write happens only
        if the document does not exist yet (`exists=False`), or was last written at `last_update`:
        otherwise Firestore refuses it (`AlreadyExists` or `FailedPrecondition`).
        """
        encoded = _write_message(path, data, field_paths)
        if exists is not None:
            encoded.current_document.exists = exists
        elif last_update is not None:
            encoded.current_document.update_time.seconds = last_update.seconds
            encoded.current_document.update_time.nanos = last_update.nanos
        response = self._commit([encoded])
        return UpdateTime.of(response.write_results[0].update_time)

    def run_transaction(
        self, work: Callable[[TransactionReads], tuple[T, Mapping[str, Mapping[str, Any]]]], attempts: int
    ) -> T:
        """Run `work` in a read-write transaction and commit the writes it returns (document path
        → fields to set), retrying a commit aborted for contention up to `attempts` times in all.
        The last abort is raised as `google.api_core.exceptions.Aborted`."""
        retrying = b""
        for attempt in range(1, attempts + 1):
            transaction = self._begin(retrying)
            try:
                result, writes = work(TransactionReads(self, transaction))
            except BaseException:
                self._roll_back(transaction)
                raise
            try:
                self._commit([field_write(path, data) for path, data in writes.items()], transaction)
            except google_exceptions.Aborted:
                # Firestore ended the transaction for a conflict: nothing to roll back.
                if attempt == attempts:
                    raise
                retrying = transaction
                continue
            except BaseException:
                self._roll_back(transaction)
                raise
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _begin(self, retrying: bytes) -> bytes:
        # Begun before any read (as the library does) rather than by the first read: a read that
        # fails on its way back would leave a transaction whose id never arrived, holding its
        # locks with nobody to roll it back.
        request = firestore_requests.BeginTransactionRequest(database=self.database)
        request_pb = firestore_requests.BeginTransactionRequest.pb(request)
        request_pb.options.read_write.SetInParent()
        if retrying:
            request_pb.options.read_write.retry_transaction = retrying
        response = self._client.begin_transaction(request=request, metadata=self._metadata)
        return firestore_requests.BeginTransactionResponse.pb(response).transaction

    def _commit(self, writes: Sequence[Any], transaction: bytes = b"") -> Any:
        """Commit `writes` (`Write` messages), in `transaction` when one is given; the raw response."""
        request = firestore_requests.CommitRequest(database=self.database, transaction=transaction)
        firestore_requests.CommitRequest.pb(request).writes.extend(writes)
        response = self._client.commit(request=request, metadata=self._metadata)
        return firestore_requests.CommitResponse.pb(response)

    def _roll_back(self, transaction: bytes) -> None:
        # With the client's own retry and deadline, as the library rolls back: the step's own
        # failure is what gets reported, but a rollback given up too early leaves the documents
        # the transaction read locked for everyone until Firestore expires it.
        with contextlib.suppress(google_exceptions.GoogleAPIError):
            self._client.rollback(
                request=firestore_requests.RollbackRequest(database=self.database, transaction=transaction),
                metadata=self._metadata,
            )
