"""Local services' ports come from below the kernel's ephemeral range, so an outgoing connection
or an instance started by the Compute emulator cannot take one between its choice and its bind."""

from __future__ import annotations

import socket

from devstack.processes import free_port, service_port_range


def test_a_chosen_port_lies_below_the_ephemeral_range_and_can_be_bound() -> None:
    port = free_port()
    assert port in service_port_range()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_never_chosen() -> None:
    listeners = []
    try:
        # Occupy a stretch of the range; none of it may come back.
        for port in service_port_range()[:200]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # already taken by something else: just as good
                sock.close()
                continue
            sock.listen()
            listeners.append(sock)
        taken = {sock.getsockname()[1] for sock in listeners}
        chosen = {free_port() for _ in range(200)}
        assert not chosen & taken
    finally:
        for sock in listeners:
            sock.close()
