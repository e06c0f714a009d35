"""Churn generator for bench/soak.py: short-lived processes, new connections and peers, a bulk stream.

Loopback only: TCP to listeners on 127.0.0.1 and ::1 that this generator opens, from source addresses drawn
from 127.0.0.0/8; UDP datagrams to addresses in 127.0.0.0/8 (a sink on 127.0.0.1 reads some of them, the rest
meet a closed port). Everything the generator starts is in one process group of its own (start() forks the
generator and it calls setpgid), so stop() ends all of it with one killpg. Every loop is bounded by the end
time or by a timeout.

- Short-lived processes: `procs_per_s` a second, forked from the generator (no exec), each named
  `ss-soak-<hex>` (prctl PR_SET_NAME, so every process has its own comm); each connects over TCP from a new
  127.x.y.z source (one in 8 over ::1), sends `tcp_bytes`, closes, sends `udp_per_proc` datagrams to new
  peers (rotating over UDP_PORTS ports) and exits.
- Long-lived workers (`workers`): together `conns_per_s` new TCP connections and `udp_peers_per_s`
  datagrams to new peers a second, from one process each for the whole run.
- A bulk TCP stream at `bulk_bytes_per_s`, read by the generator.

Counters live in shared memory (one slot per writing process), so the benchmark reads them at any time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import mmap
import os
import random
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

PR_SET_NAME = 15
FIELDS = ("procs", "procs_ok", "procs_failed", "tcp_conns", "udp_datagrams", "bytes_sent", "bytes_received", "errors")
UDP_PORTS = (20_000, 60_000)  # peers' ports rotate over this range
TCP_PORTS = 4  # listeners per family
CONNECT_TIMEOUT = 5.0
CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class ChurnConfig:
    procs_per_s: float = 80.0
    tcp_bytes: int = 512  # per short-lived process
    udp_per_proc: int = 3
    udp_bytes: int = 200
    workers: int = 2
    conns_per_s: float = 20.0  # new TCP connections a second, all workers together
    udp_peers_per_s: float = 50.0  # datagrams to new peers a second, all workers together
    bulk_bytes_per_s: int = 8_000_000  # 0: no bulk stream
    seed: int = 1


class Counters:
    """64-bit counters in anonymous shared memory, inherited across fork; each slot has one writer."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._mem = mmap.mmap(-1, 8 * len(FIELDS) * slots)

    def add(self, slot: int, name: str, n: int = 1) -> None:
        off = 8 * (slot * len(FIELDS) + FIELDS.index(name))
        struct.pack_into("<Q", self._mem, off, struct.unpack_from("<Q", self._mem, off)[0] + n)

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(FIELDS, 0)
        for slot in range(self.slots):
            for i, name in enumerate(FIELDS):
                out[name] += struct.unpack_from("<Q", self._mem, 8 * (slot * len(FIELDS) + i))[0]
        return out


def _set_comm(libc: ctypes.CDLL, name: str) -> None:
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _default_signals() -> None:
    """In a forked child: SIGTERM and SIGINT end it (not the generator's handler, which only sets a flag)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _local4(rng: random.Random) -> str:
    return f"127.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _tcp_once(rng: random.Random, ports: dict[int, list[int]], payload: bytes, v6: bool) -> None:
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        if not v6:
            s.bind((_local4(rng), 0))
        s.connect(("::1" if v6 else "127.0.0.1", rng.choice(ports[fam])))
        s.sendall(payload)


def _udp_new_peers(rng: random.Random, sock: socket.socket, n: int, payload: bytes, sink: int) -> None:
    for i in range(n):
        # One in three to the sink (received, so counted both ways); the rest to a new peer's closed port.
        peer = ("127.0.0.1", sink) if i % 3 == 0 else (_local4(rng), rng.randrange(*UDP_PORTS))
        sock.sendto(payload, peer)


def _short_lived(n: int, cfg: ChurnConfig, ports: dict[int, list[int]], sink: int, libc: ctypes.CDLL) -> None:
    """The body of one short-lived process: never returns."""
    code = 1
    try:
        _default_signals()
        rng = random.Random(cfg.seed * 1_000_003 + n)
        _set_comm(libc, f"ss-soak-{n:x}")
        _tcp_once(rng, ports, b"x" * cfg.tcp_bytes, v6=n % 8 == 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            _udp_new_peers(rng, u, cfg.udp_per_proc, b"u" * cfg.udp_bytes, sink)
        code = 0
    except BaseException:  # a forked child must never return into the generator
        pass
    finally:
        os._exit(code)


def _worker(slot: int, cfg: ChurnConfig, counters: Counters, ports: dict[int, list[int]], sink: int,
            end: float, libc: ctypes.CDLL) -> None:  # fmt: skip
    """A long-lived process: new TCP connections and new UDP peers every second until `end`."""
    rng = random.Random(cfg.seed * 7919 + slot)
    _set_comm(libc, f"ss-soak-w{slot}")
    conns = max(1, round(cfg.conns_per_s / cfg.workers))
    peers = max(1, round(cfg.udp_peers_per_s / cfg.workers))
    payload, dgram = b"w" * 1024, b"p" * cfg.udp_bytes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        tick = time.monotonic()
        while tick < end:
            for i in range(conns):
                try:
                    _tcp_once(rng, ports, payload, v6=i % 8 == 0)
                    counters.add(slot, "tcp_conns")
                    counters.add(slot, "bytes_sent", len(payload))
                except OSError:
                    counters.add(slot, "errors")
            try:
                _udp_new_peers(rng, u, peers, dgram, sink)
                counters.add(slot, "udp_datagrams", peers)
                counters.add(slot, "bytes_sent", peers * len(dgram))
            except OSError:
                counters.add(slot, "errors")
            tick += 1.0
            time.sleep(max(0.0, tick - time.monotonic()))


def _bulk(slot: int, cfg: ChurnConfig, counters: Counters, port: int, end: float, libc: ctypes.CDLL) -> None:
    _set_comm(libc, "ss-soak-bulk")
    chunk = b"b" * CHUNK
    with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT) as s:
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) < end:
            if sent > (now - start) * cfg.bulk_bytes_per_s:
                time.sleep(min(0.05, sent / cfg.bulk_bytes_per_s - (now - start)))
                continue
            s.sendall(chunk)
            sent += CHUNK
            counters.add(slot, "bytes_sent", CHUNK)


def _spawn(body: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _default_signals()
            body()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def _listen(fam: int, kind: int, host: str) -> socket.socket:
    s = socket.socket(fam, kind)
    s.bind((host, 0))
    if kind == socket.SOCK_STREAM:
        s.listen(1024)
    s.setblocking(False)
    return s


def run(cfg: ChurnConfig, counters: Counters, seconds: float) -> None:
    """The generator itself (slot 0 of `counters`; workers 1..workers, the bulk stream the last slot)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _set_comm(libc, "ss-soak-gen")
    end = time.monotonic() + seconds
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sel = selectors.DefaultSelector()
    ports: dict[int, list[int]] = {socket.AF_INET: [], socket.AF_INET6: []}
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for _ in range(TCP_PORTS):
            ls = _listen(fam, socket.SOCK_STREAM, host)
            ports[fam].append(ls.getsockname()[1])
            sel.register(ls, selectors.EVENT_READ, "listen")
    bulk_ls = _listen(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1")
    sel.register(bulk_ls, selectors.EVENT_READ, "listen")
    sink = _listen(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1")
    sel.register(sink, selectors.EVENT_READ, "sink")
    sink_port = sink.getsockname()[1]

    helpers: set[int] = set()
    for w in range(cfg.workers):
        helpers.add(_spawn(functools.partial(_worker, 1 + w, cfg, counters, ports, sink_port, end, libc)))
    if cfg.bulk_bytes_per_s > 0:
        bulk_port = bulk_ls.getsockname()[1]
        helpers.add(_spawn(functools.partial(_bulk, 1 + cfg.workers, cfg, counters, bulk_port, end, libc)))

    per_proc = cfg.tcp_bytes + cfg.udp_per_proc * cfg.udp_bytes
    step = 1.0 / cfg.procs_per_s if cfg.procs_per_s > 0 else float("inf")
    next_fork = time.monotonic()
    n = 0
    buf = bytearray(CHUNK * 4)
    try:
        while not stop and (now := time.monotonic()) < end:
            if now - next_fork > 1.0:  # fallen behind by more than a second: do not burst
                next_fork = now
            while next_fork <= now:
                n += 1
                if os.fork() == 0:
                    _short_lived(n, cfg, ports, sink_port, libc)
                counters.add(0, "procs")
                next_fork += step
            for key, _ in sel.select(timeout=max(0.0, min(next_fork, end) - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if key.data == "listen":
                        conn, _addr = sock.accept()
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                        continue
                    got = sock.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    got = 0
                if got:
                    counters.add(0, "bytes_received", got)
                elif key.data == "conn":
                    sel.unregister(sock)
                    sock.close()
            while True:  # reap
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in helpers:
                    helpers.discard(pid)
                    if os.waitstatus_to_exitcode(status) != 0:
                        counters.add(0, "errors")
                elif os.waitstatus_to_exitcode(status) == 0:
                    counters.add(0, "procs_ok")
                    counters.add(0, "tcp_conns")
                    counters.add(0, "udp_datagrams", cfg.udp_per_proc)
                    counters.add(0, "bytes_sent", per_proc)
                else:
                    counters.add(0, "procs_failed")
    finally:
        for pid in helpers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.05)
            except ChildProcessError:
                break


def start(cfg: ChurnConfig, seconds: float) -> tuple[int, Counters]:
    """Fork the generator into a process group of its own; (its pid = the group id, the counters)."""
    counters = Counters(2 + cfg.workers)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)
            run(cfg, counters, seconds)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also from here: no window in which the group does not exist yet
    return pid, counters


def stop(pid: int, timeout: float = 10.0) -> int | None:
    """End the generator's whole group: SIGTERM, then SIGKILL after `timeout`. Its exit code, if it had one."""
    code: int | None = None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # short-lived children or workers still there
    if code is None:
        with contextlib.suppress(ChildProcessError):
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code
