"""Free loopback ports for the servers a test starts."""

import socket


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
