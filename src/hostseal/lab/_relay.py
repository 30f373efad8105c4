"""Relay one connection between stdin/stdout and 127.0.0.1:PORT, passing the close both ways.

QEMU's ``guestfwd=...-cmd:`` runs this once per connection the guest opens, with the
connection on stdin/stdout. When the guest closes its side, the server sees end of input
(``shutdown(SHUT_WR)``); when the server closes, the guest does (stdout closed); the relay exits
when both directions are done. (OpenBSD ``nc`` would wait for its input to end instead.)

Run as a script (``python3 -I -S _relay.py PORT``): standard library only, quick to start.
"""

from __future__ import annotations

import os
import select
import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    guest_open = server_open = True
    while guest_open or server_open:
        readable, _, _ = select.select(
            [fd for fd, is_open in ((stdin, guest_open), (sock.fileno(), server_open)) if is_open],
            [],
            [],
        )
        if stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                sock.sendall(data)
            else:
                guest_open = False
                sock.shutdown(socket.SHUT_WR)
        if sock.fileno() in readable:
            data = sock.recv(65536)
            if data:
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view) :]
            else:
                server_open = False
                os.close(stdout)
                # the guest has nothing more to receive: its side is done as well
                guest_open = False
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
