"""A free TCP port on this host, for a server or a rendezvous a test starts (fixed ports collide)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
