"""`python -m bench firestore`: what a step's Firestore work costs, through the library's
document and transaction objects and through the store's generated-client path
(`shared/adapters/firestore_rpc.py`), against the Firestore emulator.

Two operations every step does: a point read of a deployment record, and a read-write
transaction that reads the record and its environment and writes the record back (the shape of
a status change); a change of that one record alone, in a transaction or as a compare-and-set
(a read and a write conditional on the record's update time); what admission's transaction reads, four records one by one or read ahead in
one batch get; and what every notification does a few times: a write to its ledger record
conditional on the update time it last saw. Per operation: the calling process's CPU, the time
until it is done, and the emulator's CPU.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.cloud import firestore

from bench.per_operation import measure, print_costs
from devstack.emulators import start_firestore
from devstack.processes import environment_applied, free_port, stop_process_group
from shared import queries
from shared.adapters.firestore_documents import deployment_write
from shared.adapters.firestore_rpc import FirestoreRpc, TransactionReads, field_path, top_level_paths
from shared.domain.records import Deployment, HistoryEntry
from shared.domain.status import DeploymentStatus

PROJECT = "bench-firestore"
OPERATIONS = 500

Operation = Callable[[], object]


def live_deployment() -> Deployment:
    """A record as a live deployment's looks: five history entries, its artifact and resources."""
    now = datetime.now(UTC)
    steps = (
        DeploymentStatus.QUEUED,
        DeploymentStatus.PROVISIONING,
        DeploymentStatus.COOLING_DOWN,
        DeploymentStatus.SWITCHING,
        DeploymentStatus.LIVE,
    )
    return Deployment(
        deployment_id="hello-staging-0123456789ab",
        app="hello",
        environment="staging",
        version="1.4.2",
        commit="a" * 40,
        build_id="circleci-1234",
        artifact="gs://hello-artifacts/hello-1.4.2.tar.gz",
        artifact_sha256="0" * 64,
        status=DeploymentStatus.LIVE,
        created_at=now,
        updated_at=now,
        history=tuple(HistoryEntry(step, now, f"{step} after the previous step") for step in steps),
        event={"app": "hello", "environment": "staging", "commit": "a" * 40},
        started_at=now,
        not_before=now,
        went_live_at=now,
        instance_template="hello-staging-0123456789ab",
        instance_group="hello-staging-0123456789ab",
    )


def main() -> None:
    record = live_deployment()
    fields = deployment_write(record)
    with tempfile.TemporaryDirectory(prefix="bench-firestore-") as tmp:
        emulator = start_firestore(free_port(), Path(tmp) / "firestore.log")
        try:
            with environment_applied({"FIRESTORE_EMULATOR_HOST": emulator.host}):
                client = firestore.Client(project=PROJECT)
                rpc = FirestoreRpc.for_project(PROJECT)
                deployment_ref = client.collection(queries.DEPLOYMENTS).document(record.deployment_id)
                environment_ref = client.collection(queries.ENVIRONMENTS).document("hello@staging")
                deployment_ref.set(fields, merge=True)
                environment_ref.set({"app": "hello", "environment": "staging", "queue": []})
                deployment_path = rpc.document_path(queries.DEPLOYMENTS, record.deployment_id)
                environment_path = rpc.document_path(queries.ENVIRONMENTS, "hello@staging")

                @firestore.transactional
                def library_change(transaction: Any) -> None:
                    next(iter(transaction.get(deployment_ref))).to_dict()
                    next(iter(transaction.get(environment_ref))).to_dict()
                    transaction.set(deployment_ref, fields, merge=True)

                def generated_change(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
                    reads.get(deployment_path)
                    reads.get(environment_path)
                    return None, {deployment_path: fields}

                # A status change of one record: provisioning's and the switch's first step.
                def one_record_transaction(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
                    reads.get(deployment_path)
                    return None, {deployment_path: fields}

                def compare_and_set() -> None:
                    _, version = rpc.read_versioned(deployment_path)
                    rpc.write(
                        deployment_path,
                        fields,
                        field_paths=top_level_paths(fields),
                        last_update=version,
                    )

                # Admission's reads: its deployment, environment, commit index and app records.
                admission_paths = [
                    deployment_path,
                    environment_path,
                    rpc.document_path(queries.RELEASE_COMMITS, "hello@" + "a" * 40),
                    rpc.document_path(queries.APPS, "hello"),
                ]

                def one_by_one(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
                    for path in admission_paths:
                        reads.get(path)
                    return None, {}

                def read_ahead(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
                    reads.get_all(admission_paths)
                    return None, {}

                ledger_ref = client.collection(queries.NOTIFICATIONS).document("bench")
                ledger_path = rpc.document_path(queries.NOTIFICATIONS, "bench-generated")
                library_version = [ledger_ref.create({"channels": {}}).update_time]
                generated_version = [rpc.write(ledger_path, {"channels": {}}, exists=False)]

                def library_update() -> None:
                    option = client.write_option(last_update_time=library_version[0])
                    result = ledger_ref.update(
                        {"channels.`chat:#releases`": {"state": "sent"}}, option=option
                    )
                    library_version[0] = result.update_time

                def generated_update() -> None:
                    generated_version[0] = rpc.write(
                        ledger_path,
                        {"channels": {"chat:#releases": {"state": "sent"}}},
                        field_paths=[field_path("channels", "chat:#releases")],
                        last_update=generated_version[0],
                    )

                print(f"{OPERATIONS} of each, on a live deployment's record ({len(fields)} fields)")
                # (what, what it is compared with, (name, operation) of the baseline, of the other)
                comparisons: list[tuple[str, str, tuple[str, Operation], tuple[str, Operation]]] = [
                    (
                        "a point read",
                        "the library's objects",
                        ("point read: library get().to_dict()", lambda: deployment_ref.get().to_dict()),
                        ("point read: generated GetDocument", lambda: rpc.read(deployment_path)),
                    ),
                    (
                        "a transaction",
                        "the library's objects",
                        (
                            "transaction: library transactional, set(merge)",
                            lambda: library_change(client.transaction()),
                        ),
                        (
                            "transaction: generated client, field mask",
                            lambda: rpc.run_transaction(generated_change, attempts=1),
                        ),
                    ),
                    (
                        "a conditional update",
                        "the library's objects",
                        ("ledger update: library update(option)", library_update),
                        ("ledger update: generated conditional write", generated_update),
                    ),
                    (
                        "a one-record status change as a compare-and-set",
                        "a transaction",
                        (
                            "one-record change: transaction",
                            lambda: rpc.run_transaction(one_record_transaction, attempts=1),
                        ),
                        ("one-record change: compare-and-set", compare_and_set),
                    ),
                    (
                        "four reads read ahead",
                        "one by one",
                        (
                            "four reads in a transaction, one by one",
                            lambda: rpc.run_transaction(one_by_one, attempts=1),
                        ),
                        (
                            "four reads in a transaction, read ahead",
                            lambda: rpc.run_transaction(read_ahead, attempts=1),
                        ),
                    ),
                ]
                costs = {
                    name: measure(operation, OPERATIONS, server_pid=emulator.process.pid)
                    for _, _, *pair in comparisons
                    for name, operation in pair
                }
        finally:
            stop_process_group(emulator.process.pid)
    print_costs(list(costs.items()), server="emulator")
    for kind, baseline, (baseline_name, _), (other_name, _) in comparisons:
        before, after = costs[baseline_name], costs[other_name]
        emulator_share = (
            f", the emulator {after.server_cpu / before.server_cpu:.2f}x"
            if after.server_cpu and before.server_cpu
            else ""
        )
        print(
            f"{kind}: the client takes {after.cpu / before.cpu:.2f}x the CPU and"
            f" {after.wall / before.wall:.2f}x the time of {baseline}{emulator_share}"
        )


if __name__ == "__main__":
    main()
