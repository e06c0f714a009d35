"""A short-lived TCP client for bench/compare.py: wait PAUSE seconds, connect, send SIZE bytes, read
the reply to EOF, exit.

Usage: NAME -S -I bench/lab_short.py HOST PORT SIZE [PAUSE]   (NAME: a symlink to the interpreter, see
bench/lab.named_python). Prints {"done": true, "tx": N, "rx": N, "pid": P} and exits.

Kept to the socket module so that the process lives as long as asked and not much longer (about
20 ms without the pause, here). The pause comes before the connection, so it does not give a
tool that looks connections up in /proc after the fact more time to find this one.
"""

from __future__ import annotations

import os
import socket
import sys
import time

TIMEOUT = 20.0


def main(argv: list[str]) -> int:
    host, port, size = argv[0], int(argv[1]), int(argv[2])
    time.sleep(float(argv[3]) if len(argv) > 3 else 0.0)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tx = rx = 0
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((host, port))
        sock.sendall(b"s" * size)
        tx = size
        sock.shutdown(socket.SHUT_WR)
        while data := sock.recv(65536):
            rx += len(data)
    # json is not imported: it would add to the start-up this process is meant to keep short.
    print(f'{{"done": true, "tx": {tx}, "rx": {rx}, "pid": {os.getpid()}}}', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
