"""Accuracy and attribution: the coverage scenarios, every tool watching at once.

Per scenario all tools are started fresh (so each one's output covers exactly that scenario), the
traffic runs between a process on the host (the subject, named distinctively) and a peer inside
the lab's namespace, nftables counts the wire, and then each tool's figures for the subject's pid
are set against the reference it should match:

- socket-level tools (sockscope, bpftrace): the generator's own count of what its calls moved;
- packet-capture tools (nethogs): the frames that crossed the veth (nftables: IP bytes + 14 per
  packet for the Ethernet header).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.lab import Generator, Lab, LabError, Wire
from bench.lab_tools import Running, ToolError, ToolResult, ToolSpec

SETTLE_AFTER = 2.5  # after the traffic: nethogs refreshes every second, sockscope every interval
SOCKET_TOLERANCE = 0.0  # a socket-level tool must be exact to the byte
WIRE_TOLERANCE_PCT = 0.001  # nethogs prints 6 significant digits: exact within that


@dataclass(slots=True)
class Subject:
    """A host-side process under test and what it says it moved."""

    pid: int
    name: str
    tx: int
    rx: int
    lifetime_s: float | None = None  # spawn -> exit (upper bound), for the short-lived ones


@dataclass(slots=True)
class ScenarioRun:
    name: str
    title: str
    subjects: list[Subject]
    wire: Wire
    seconds: float
    results: dict[str, ToolResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # tool -> why it has no result


@dataclass(slots=True)
class Score:
    scenario: str
    tool: str
    reference: str  # "socket" or "wire"
    subjects: int
    ref_tx: int
    ref_rx: int
    got_tx: int
    got_rx: int
    found: int  # subjects the tool reported under their pid
    named: int  # ... and under their name
    exact: int  # ... with exact counts (socket reference only; per subject)
    unknown_tx: int  # bytes the tool put in "unknown" rows (nethogs)
    unknown_rx: int
    shown_as: list[str]
    error: str | None = None

    @property
    def tx_err_pct(self) -> float | None:
        return error_pct(self.got_tx, self.ref_tx)

    @property
    def rx_err_pct(self) -> float | None:
        return error_pct(self.got_rx, self.ref_rx)

    @property
    def accurate(self) -> bool:
        if self.error is not None:
            return False
        if self.reference == "socket":
            return self.exact == self.subjects
        return all(abs(e) <= WIRE_TOLERANCE_PCT for e in (self.tx_err_pct, self.rx_err_pct) if e is not None)

    @property
    def attributed(self) -> bool:
        return self.error is None and self.named == self.subjects


def error_pct(got: int, ref: int) -> float | None:
    """(got - ref) / ref in percent; None when there is no reference (0 expected)."""
    if ref == 0:
        return None if got == 0 else float("inf")
    return 100.0 * (got - ref) / ref


def name_matches(shown: str, expected: str) -> bool:
    # nethogs shows argv[0] (a path here), the BPF tools the kernel's comm (15 characters at most).
    return os.path.basename(shown) == expected or shown == expected[:15]


def score(run: ScenarioRun, spec: ToolSpec) -> Score:
    """One tool's figures for the scenario's subjects against its reference."""
    subjects = run.subjects
    if spec.name in run.errors or spec.name not in run.results:
        return Score(run.name, spec.name, spec.reference, len(subjects), 0, 0, 0, 0, 0, 0, 0, 0, 0, [],
                     error=run.errors.get(spec.name, "no result"))  # fmt: skip
    result = run.results[spec.name]
    got = [result.procs.get(s.pid) for s in subjects]
    found = [(s, g) for s, g in zip(subjects, got, strict=True) if g is not None]
    shown = sorted({os.path.basename(g.name) for _, g in found})
    unknown_tx = sum(c.tx for c in result.unknown.values())
    unknown_rx = sum(c.rx for c in result.unknown.values())
    if unknown_tx or unknown_rx:
        shown += sorted(name for name, c in result.unknown.items() if c.tx or c.rx)
    if spec.reference == "socket":
        ref_tx, ref_rx = sum(s.tx for s in subjects), sum(s.rx for s in subjects)
        exact = sum(1 for s, g in found if (g.tx, g.rx) == (s.tx, s.rx))
    else:
        ref_tx, ref_rx = run.wire.sent.frame_bytes, run.wire.received.frame_bytes
        exact = 0  # per-process wire bytes are not known when several subjects share the wire
    return Score(
        scenario=run.name,
        tool=spec.name,
        reference=spec.reference,
        subjects=len(subjects),
        ref_tx=ref_tx,
        ref_rx=ref_rx,
        got_tx=sum(g.tx for _, g in found),
        got_rx=sum(g.rx for _, g in found),
        found=len(found),
        named=sum(1 for s, g in found if name_matches(g.name, s.name)),
        exact=exact,
        unknown_tx=unknown_tx,
        unknown_rx=unknown_rx,
        shown_as=shown,
    )


# ---------------------------------------------------------------------------
# Scenarios: each runs its traffic and returns the subjects with their own counts
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ctx:
    lab: Lab
    bindir: Path  # named interpreters (symlinks) live here
    python: str
    pace_seconds: float  # how long the paced transfers last


def gen(ctx: Ctx, name: str, mode: str, *args: str, inside: bool = False) -> Generator:
    return Generator(ctx.lab, ctx.bindir, ctx.python, name, mode, *args, inside=inside)


def pace(ctx: Ctx) -> str:
    # 64 KiB every 5 ms (about 13 MB/s): long enough for a once-a-second tool to see the process
    # alive, which is the fair case for nethogs; the short-lived scenario is the unfair one.
    return f"65536:0.005:{ctx.pace_seconds:g}"


def serve_then(server: Generator, client: Callable[[int], Generator]) -> tuple[dict[str, object], dict[str, object]]:
    """Start `client` against the port the server reports; both final counts."""
    try:
        port = int(server.line()["port"])
        cli = client(port)
        try:
            c_done = cli.wait()
        finally:
            cli.kill()
        return c_done, server.wait()
    finally:
        server.kill()


def subject(pid: int, name: str, done: dict[str, object]) -> Subject:
    tx, rx = done.get("tx"), done.get("rx")
    if not isinstance(tx, int) or not isinstance(rx, int):
        raise LabError(f"{name}: no byte counts in {done}")
    return Subject(pid, name, tx, rx)


def _upload(ctx: Ctx, name: str, sink: str, host: str, *server_args: str) -> list[Subject]:
    """The subject: a host process sending paced to a server inside the namespace."""
    srv = gen(ctx, sink, "tcp-server", "--bind", host, *server_args, inside=True)
    holder: list[Generator] = []

    def client(port: int) -> Generator:
        holder.append(gen(ctx, name, "tcp-client", "--host", host, "--port", str(port), "--pace", pace(ctx)))
        return holder[0]

    c_done, _ = serve_then(srv, client)
    return [subject(holder[0].pid, name, c_done)]


def tcp_send(ctx: Ctx) -> list[Subject]:
    return _upload(ctx, "ss-tcp-send", "ss-sink", ctx.lab.peer4)


def tcp_recv(ctx: Ctx) -> list[Subject]:
    lab = ctx.lab
    name = "ss-tcp-recv"
    srv = gen(ctx, name, "tcp-server", "--bind", lab.host4)  # the subject: a host process receiving
    pid = srv.pid

    def client(port: int) -> Generator:
        return gen(ctx, "ss-source", "tcp-client", "--host", lab.host4, "--port", str(port), "--pace", pace(ctx),
                   inside=True)  # fmt: skip

    _, s_done = serve_then(srv, client)
    return [subject(pid, name, s_done)]


def udp_both(ctx: Ctx, count: int = 8000) -> list[Subject]:
    lab = ctx.lab
    srv = gen(ctx, "ss-udp-echo", "udp-server", "--bind", lab.peer4, "--count", str(count), "--reply", "1000",
              inside=True)  # fmt: skip
    name = "ss-udp"
    holder: list[Generator] = []

    def client(port: int) -> Generator:
        # Lockstep (one datagram in flight): nothing is lost, so every count is exact.
        holder.append(gen(ctx, name, "udp-client", "--host", lab.peer4, "--port", str(port),
                          "--count", str(count), "--size", "1200"))  # fmt: skip
        return holder[0]

    c_done, _ = serve_then(srv, client)
    return [subject(holder[0].pid, name, c_done)]


def tcp6(ctx: Ctx) -> list[Subject]:
    return _upload(ctx, "ss-tcp6", "ss-sink6", ctx.lab.peer6, "--reply", "4000037")


SHORT_CLIENT = Path(__file__).resolve().with_name("lab_short.py")


def short_client(ctx: Ctx, name: str, port: int, size: int) -> Generator:
    # A 30 ms pause before connecting: each process lives about 50 ms.
    return Generator(
        ctx.lab, ctx.bindir, ctx.python, name, ctx.lab.peer4, str(port), str(size), "0.03", script=SHORT_CLIENT
    )


def short_lived(ctx: Ctx, count: int = 40, batch: int = 2) -> list[Subject]:
    """`count` processes, `batch` at a time (this machine may have 2 CPUs), each living about 50 ms
    (bench/lab_short.py): connect, send a known number of bytes, read a 1000-byte reply, exit."""
    lab = ctx.lab
    name = "ss-short"
    srv = gen(ctx, "ss-short-sink", "tcp-server", "--bind", lab.peer4, "--accept", str(count), "--reply", "1000",
              inside=True)  # fmt: skip
    subjects: list[Subject] = []
    try:
        port = int(srv.line()["port"])
        for first in range(0, count, batch):
            sizes = [3000 + i * 7 for i in range(first, min(first + batch, count))]
            procs = [short_client(ctx, name, port, size) for size in sizes]
            try:
                for p in procs:
                    s = subject(p.pid, name, p.wait())
                    s.lifetime_s = p.lifetime
                    subjects.append(s)
            finally:
                for p in procs:
                    p.kill()
        srv.wait()
    finally:
        srv.kill()
    return subjects


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Ctx], list[Subject]]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("tcp_send", "TCP bulk send, IPv4 (paced upload)", tcp_send),
    Scenario("tcp_recv", "TCP receive, IPv4 (paced download)", tcp_recv),
    Scenario("udp", "UDP send + receive, IPv4 (8000 x 1200 B out, 1000 B back)", udp_both),
    Scenario("tcp6", "TCP both ways, IPv6 (paced upload, 4 MB back)", tcp6),
    Scenario("short_lived", "40 short-lived processes (~50 ms each; TCP, 3 kB out, 1 kB back)", short_lived),
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_tools(specs: Sequence[ToolSpec], workdir: Path, label: str) -> tuple[list[Running], dict[str, str]]:
    """Start every tool at once, then wait for each to be counting; a tool that fails is left out."""
    running: list[Running] = []
    errors: dict[str, str] = {}
    for spec in specs:
        try:
            running.append(Running(spec, workdir, label))
        except OSError as exc:
            errors[spec.name] = f"cannot start: {exc}"
    ready: list[Running] = []
    for tool in running:
        try:
            tool.wait_ready()
            ready.append(tool)
        except ToolError as exc:
            errors[tool.spec.name] = str(exc)
            tool.kill()
    return ready, errors


def run_scenario(scn: Scenario, ctx: Ctx, specs: Sequence[ToolSpec], workdir: Path) -> ScenarioRun:
    tools, errors = start_tools(specs, workdir, scn.name)
    try:
        ctx.lab.reset_wire()
        t0 = time.monotonic()
        subjects = scn.run(ctx)
        seconds = time.monotonic() - t0
        time.sleep(SETTLE_AFTER)
        wire = ctx.lab.read_wire()
        run = ScenarioRun(scn.name, scn.title, subjects, wire, seconds, errors=errors)
        for tool in tools:
            if not tool.alive():
                run.errors[tool.spec.name] = f"exited during the scenario: {tool.proc.stderr_tail()}"
            run.results[tool.spec.name] = tool.stop()
        return run
    finally:
        for tool in tools:
            tool.kill()


def run_accuracy(ctx: Ctx, specs: Sequence[ToolSpec], workdir: Path) -> tuple[list[ScenarioRun], list[str]]:
    """All scenarios; one whose traffic fails is left out and said so (the notes), the rest still run."""
    runs, notes = [], []
    for scn in SCENARIOS:
        log(f"accuracy: {scn.title} ...")
        try:
            run = run_scenario(scn, ctx, specs, workdir)
        except (LabError, OSError, ValueError, KeyError) as exc:
            notes.append(f"accuracy scenario '{scn.title}' failed and is left out: {exc}")
            log(f"  failed: {exc}")
            continue
        for spec in specs:
            s = score(run, spec)
            verdict = s.error or (
                f"{'exact' if s.accurate else 'NOT exact'}, named {s.named}/{s.subjects}"
                f" (tx {s.got_tx:,} vs {s.ref_tx:,}, rx {s.got_rx:,} vs {s.ref_rx:,})"
            )
            log(f"  {spec.name}: {verdict}")
        runs.append(run)
    return runs, notes
