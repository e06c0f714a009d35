"""systemd-resolved's query monitor (varlink, io.systemd.Resolve.Monitor): a second source of
names, for lookups that reach resolved without a DNS packet on the program's side (nss-resolve
over D-Bus or varlink). It does not say which process asked: its names are the namespace's
(`name_source: resolved`). Where resolved does not run, its absence is normal (doctor says so).

One thread reads the subscription; replies are parsed here (untrusted JSON: anything unexpected
is a malformed reply, counted) and handed over through a bounded queue."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import threading
from typing import Any

from sockscope.collector.addresses import V4MAPPED_PREFIX
from sockscope.names.dns import Resolved, cname_chain

SOCKET = "/run/systemd/resolve/io.systemd.Resolve.Monitor"
METHOD = "io.systemd.Resolve.Monitor.SubscribeQueryResults"
QUEUE = 1024  # replies waiting for the next read
MAX_MESSAGE = 1 << 20  # a reply longer than this ends the subscription (and is counted)
TYPE_A, TYPE_CNAME, TYPE_AAAA = 1, 5, 28


def _name(value: object) -> str | None:
    return value.rstrip(".").lower() if isinstance(value, str) and value else None


def _address(value: object, rtype: int) -> bytes | None:
    if not isinstance(value, list) or len(value) != (4 if rtype == TYPE_A else 16):
        return None
    if not all(isinstance(b, int) and 0 <= b <= 255 for b in value):
        return None
    raw = bytes(value)
    return V4MAPPED_PREFIX + raw if rtype == TYPE_A else raw


def parse_reply(params: object) -> list[Resolved] | None:
    """The addresses one monitor reply gives for its question, with the CNAME chain; None when
    it is malformed, [] when it names no address (a failed lookup, say)."""
    if not isinstance(params, dict):
        return None
    if params.get("state") != "success":
        return []
    questions, answers = params.get("question"), params.get("answer")
    if not isinstance(questions, list) or not questions or not isinstance(answers, list):
        return None
    first = questions[0]
    asked = _name(first.get("name")) if isinstance(first, dict) else None
    if asked is None:
        return None
    cnames: dict[str, str] = {}
    addrs: list[tuple[str, bytes]] = []
    for a in answers:
        rr = a.get("rr") if isinstance(a, dict) else None
        key = rr.get("key") if isinstance(rr, dict) else None
        if not isinstance(rr, dict) or not isinstance(key, dict):
            return None
        owner, rtype = _name(key.get("name")), key.get("type")
        if owner is None or not isinstance(rtype, int):
            return None
        if rtype == TYPE_CNAME:
            target = _name(rr.get("name"))
            if target is None:
                return None
            cnames.setdefault(owner, target)
        elif rtype in (TYPE_A, TYPE_AAAA):
            addr = _address(rr.get("address"), rtype)
            if addr is None:
                return None
            addrs.append((owner, addr))
    owner, chain = cname_chain(asked, cnames)
    return [Resolved(addr, asked, tuple(chain), 0) for o, addr in addrs if o == owner]


class ResolvedMonitor:
    def __init__(self, path: str = SOCKET) -> None:
        self.path = path
        self.state = "not started"
        self.malformed = 0  # replies that did not parse
        self.dropped = 0  # replies not taken: the queue was full
        self._queue: queue.Queue[list[Resolved]] = queue.Queue(QUEUE)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Subscribe, when resolved runs; the state says how it went, in words for doctor."""
        if not os.path.exists(self.path):
            self.state = f"absent (no {self.path}: systemd-resolved does not run here; normal)"
            return self.state
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2.0)
            s.connect(self.path)
            s.sendall(json.dumps({"method": METHOD, "more": True}).encode() + b"\0")
            s.settimeout(None)
        except OSError as exc:
            self.state = f"not subscribed: {exc}"
            return self.state
        self._sock = s
        self.state = "subscribed"
        self._thread = threading.Thread(target=self._run, name="sockscope-resolved", daemon=True)
        self._thread.start()
        return self.state

    def _run(self) -> None:
        assert self._sock is not None
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                break
            if not chunk:
                self.state = "ended: systemd-resolved closed the subscription"
                break
            buf += chunk
            *messages, buf = buf.split(b"\0")
            if len(buf) > MAX_MESSAGE:
                self.malformed += 1
                self.state = "ended: a reply too long"
                break
            for raw in messages:
                self._take(raw)

    def _take(self, raw: bytes) -> None:
        try:
            msg: Any = json.loads(raw)
        except ValueError:
            self.malformed += 1
            return
        if isinstance(msg, dict) and "error" in msg:
            self.state = f"refused: {str(msg.get('error'))[:200]}"
            return
        got = parse_reply(msg.get("parameters") if isinstance(msg, dict) else None)
        if got is None:
            self.malformed += 1
        elif got:
            try:
                self._queue.put_nowait(got)
            except queue.Full:
                self.dropped += 1

    def drain(self) -> list[Resolved]:
        out: list[Resolved] = []
        while True:
            try:
                out += self._queue.get_nowait()
            except queue.Empty:
                return out

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
