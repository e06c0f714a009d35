"""The per-call cost with the monitors switched on and off inside ONE ping-pong process.

Separate processes per configuration (percall.py's first section) differ by more than the
programs: where the kernel placed their sockets and buffers, which cache lines collide. Those
differences scatter each measurement by +-30-50 ns, as much as the floor itself. Here one
ping-pong process per mode (bench/pingpong.c, served: a timed batch per line of stdin) keeps
its sockets, and between its batches the bench attaches and detaches programs:

  none       nothing attached on the send/receive tracepoints;
  floor      bench/floor.bpf.c's EMPTY floor_send and floor_recv;
  counter    bench/floor.bpf.c's count_send and count_recv: the least a per-(socket, process)
             count does (the pid helper, a per-CPU slot, an add), for scale;
  sockscope  sockscope's own collector, loaded in this process with its default options and
             read every second (as `top` does, on the other CPUs); only its programs on the two
             tracepoints (ss_tp_send, ss_tp_recv) are detached between its batches, the rest
             stays attached (none of it runs on the ping-pong's path);
  sockscope --no-splice  a second collector, TCP receives counted by the calls' return values;
  sockscope, loaded again  a third collector, the same build and options as `sockscope`: the
             control. Two loads of one build differ by where their maps land, so the gap between
             the two rows is how far apart rows must be to be told apart (aa_gaps).

Per repetition every configuration runs one short batch (--toggle-batch-ms), back to back, in
an order from a design balanced for what runs just before (balanced_orders); a configuration's
figure is the median over repetitions of (its batch - that repetition's none). Short batches:
the machine's slow drift cancels within a repetition, and the noise of one batch is then nearly
independent of the next one's.

The repetitions run in blocks, each with a fresh ping-pong process and every monitor loaded
anew: where one load's maps land (which cache sets, next to which kernel data) moves that
load's figure by several ns, for the same code. One load per run would make that placement
part of a configuration's figure; blocks take the median over several.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import statistics
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench.overhead import BenchError, Children, log, markdown_table
from bench.percall_parts import FLOOR_SEND_RECV, Floor, Mode, bpftool_progs

COUNTER = ("count_send", "count_recv")
SOCKSCOPE_PROGS = ("ss_tp_send", "ss_tp_recv")
HOOK_GROUPS = ("tracepoint", "fentry", "kprobe")
AGAIN = "sockscope, loaded again"
CONFIGS = ("none", "floor", "counter", "sockscope", "sockscope --no-splice", AGAIN)


@dataclass(frozen=True, slots=True)
class HookSet:
    """What one hook group's per-call cost is measured on (--hooks): its floor (empty programs on
    the hooks the bench's IPv4 calls pass), the minimal counter where the group has one, and
    sockscope's per-call programs, the ones switched (the group's counting programs but those
    that run once per socket, per read of the collector or per new task: the socket's end, the
    iterator, and the stacks' generations, which stay attached)."""

    group: str
    floor: tuple[str, ...]
    counter: tuple[str, ...]
    sockscope: tuple[str, ...]


def hook_set(group: str) -> HookSet:
    from sockscope.bpf.loader import COUNT_GROUPS, NEWTASK, SPLICE_PROGS

    progs = next((g.programs for g in COUNT_GROUPS if g.name == group), None)
    if progs is None:
        raise BenchError(f"unknown hook group {group!r}")
    mine = tuple(p for p in progs if p not in (*SPLICE_PROGS, NEWTASK))
    if group == "fentry":
        return HookSet(group, ("floor_fx_send", "floor_fx_recv"), ("count_fx_send", "count_fx_recv"), mine)
    if group == "kprobe":
        return HookSet(group, ("floor_kp_send", "floor_krp_send", "floor_kp_recv", "floor_krp_recv"), (), mine)
    return HookSet(group, FLOOR_SEND_RECV, COUNTER, mine)


TRACEPOINT = HookSet("tracepoint", FLOOR_SEND_RECV, COUNTER, SOCKSCOPE_PROGS)


def group_configs(hooks: HookSet) -> tuple[str, ...]:
    """CONFIGS a group can run: no counter where it has none (kprobe)."""
    return tuple(c for c in CONFIGS if c != "counter" or hooks.counter)


@dataclass(frozen=True, slots=True)
class Switch:
    name: str
    on: Callable[[], None]
    off: Callable[[], None]
    progs: dict[str, int] = dataclasses.field(default_factory=dict)  # its per-call programs: name -> id
    reads: Callable[[], int] | None = None  # an in-process collector's reads so far


@dataclass(slots=True)
class ToggleStat:
    """bpf_stats of one configuration's program over one block (--toggle-stats)."""

    block: int
    config: str
    mode: str
    prog: str
    run_cnt: int
    run_time_ns: int


@dataclass(slots=True)
class ToggleSample:
    rep: int
    config: str
    mode: str
    ns_per_round: float
    nivcsw: int
    block: int = 0


class Served:
    """A ping-pong process in served mode: its sockets live as long as it does."""

    def __init__(self, children: Children, exe: Path, mode: Mode, cpu: int, warmup: int) -> None:
        argv = [str(exe), mode.proto, str(mode.sockets), str(cpu), str(warmup), "1", "0", "3600"]
        self._children = children
        self.proc = children.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._expect("ready")

    def _expect(self, what: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line or (what and line.strip() != what):
            self.proc.kill()
            raise BenchError(f"pingpong (served) said {line.strip()!r}, exit {self.proc.wait()}")
        return str(line)

    def batch(self, rounds: int) -> tuple[float, int]:
        """ns per round, involuntary context switches."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{rounds}\n")
        self.proc.stdin.flush()
        parts = self._expect("").split()
        return float(parts[0]), int(parts[3])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._children.forget(self.proc)


class InProcessSockscope:
    """sockscope's collector in this process, read every second by a thread, as top reads it;
    its hook group forced (hooks.group), its per-call programs (hooks.sockscope) switched."""

    def __init__(self, object_path: str | None = None, splice: bool = True, hooks: HookSet = TRACEPOINT) -> None:
        from sockscope.bpf.loader import Collector, CollectorOptions

        opts = CollectorOptions(count_groups=(hooks.group,), object_path=object_path, splice=splice)
        self._progs = hooks.sockscope
        self.collector = Collector(opts)
        self.collector.start()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reads = 0
        self.collector.pause(self._progs)
        self._thread = threading.Thread(target=self._reader, name="percall-reader", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self.collector.read_flows()
                self.collector.read_events()
                self.collector.read_dns()
                self.reads += 1

    def on(self) -> None:
        with self._lock:
            self.collector.resume()

    def off(self) -> None:
        with self._lock:
            self.collector.pause(self._progs)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.collector.close()


Switches = Callable[[int], AbstractContextManager[list[Switch]]]


@contextlib.contextmanager
def switches(
    floor_obj: Path,
    configs: Sequence[str],
    objects: Sequence[tuple[str, str]] = (),
    first: int = 0,
    bpftool: str | None = None,
    hooks: HookSet = TRACEPOINT,
) -> Iterator[list[Switch]]:
    """The configurations' switches, every program loaded anew (bench/floor.bpf.o from floor_obj);
    `objects`: (name, path) of other builds of sockscope.bpf.o to compare in the same run (an
    earlier commit's, say), each loaded by a collector of its own. The loads are made in an order
    rotated by `first` (the block's number): which load comes first or second is part of where
    its maps land, so no configuration keeps one place. With `bpftool`, each switch also knows
    its per-call programs' ids (the programs each load added), for bpf_stats. `hooks`: the hook
    group measured, the same for every configuration."""
    unknown = [c for c in configs if c not in group_configs(hooks)]
    if unknown:
        raise BenchError(f"toggled configuration {unknown[0]!r} unknown, or not in hook group {hooks.group}")
    loads: list[tuple[str, Callable[[], InProcessSockscope] | None]] = [("floor", None)]
    loads += [
        (c, functools.partial(InProcessSockscope, splice=c != "sockscope --no-splice", hooks=hooks))
        for c in configs
        if c.startswith("sockscope")
    ]
    loads += [(name, functools.partial(InProcessSockscope, object_path=path, hooks=hooks)) for name, path in objects]
    k = first % len(loads)
    floor: Floor | None = None
    mons: dict[str, InProcessSockscope] = {}
    try:
        ids: dict[str, dict[str, int]] = {}  # load -> its programs' name -> id
        seen = {int(p["id"]) for p in bpftool_progs(bpftool)} if bpftool else set()
        for name, load in [*loads[k:], *loads[:k]]:
            if load is None:
                try:
                    floor = Floor(floor_obj, (*hooks.floor, *hooks.counter))
                except OSError as exc:  # this kernel refuses the group's hooks (fexit here: EPERM)
                    why = str(exc).strip()
                    msg = f"hook group {hooks.group}: this kernel refuses its empty programs ({why})"
                    raise BenchError(msg) from exc
            else:
                mons[name] = load()
            if bpftool:  # the programs this load added: those not listed before it
                now = bpftool_progs(bpftool)
                ids[name] = {str(p["name"]): int(p["id"]) for p in now if int(p["id"]) not in seen}
                seen = {int(p["id"]) for p in now}
        assert floor is not None
        out: list[Switch] = []
        for name in [*configs, *(n for n, _ in objects)]:
            if name == "none":
                out.append(Switch(name, lambda: None, lambda: None))
            elif name in ("floor", "counter"):
                progs = hooks.floor if name == "floor" else hooks.counter
                mine = {p: i for p, i in ids.get("floor", {}).items() if p in progs}
                out.append(Switch(name, lambda p=progs: floor.attach(p), floor.detach, mine))  # type: ignore[misc]
            else:
                mine = {p: i for p, i in ids.get(name, {}).items() if p in hooks.sockscope}
                mon = mons[name]
                out.append(Switch(name, mon.on, mon.off, mine, lambda m=mon: m.reads))  # type: ignore[misc]
        yield out
    finally:
        for mon in mons.values():
            mon.close()
        if floor is not None:
            floor.close()


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of n configurations (a Williams design) in which each configuration comes right
    after every other one equally often: once each over the n orders (n even), twice over 2n
    (n odd, the orders and their mirrors). A rotation of one order would put a configuration
    always after the same neighbour, whose detach (and whatever the kernel defers from it) comes
    just before the batch: part of the figure, the same for every repetition."""
    if n < 2:
        return [list(range(n))]
    first = [0] + [(j + 1) // 2 if j % 2 else n - j // 2 for j in range(1, n)]
    rows = [[(x + i) % n for x in first] for i in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def blocks_of(reps: int, blocks: int) -> list[range]:
    """Repetitions 0..reps-1 in `blocks` consecutive runs as even as can be (none empty)."""
    blocks = max(1, min(blocks, reps))
    edges = [reps * b // blocks for b in range(blocks + 1)]
    return [range(edges[b], edges[b + 1]) for b in range(blocks)]


def measure_toggled(
    children: Children,
    exe: Path,
    cpu: int,
    modes: Sequence[Mode],
    make: Switches,
    reps: int,
    blocks: int,
    rounds: dict[str, int],
    stats: list[ToggleStat] | None = None,
    bpftool: str | None = None,
) -> list[ToggleSample]:
    """The toggled samples; with `stats` and `bpftool` (bpf_stats on, switches made with
    bpftool), each block's run time of every configuration's per-call programs too."""
    out: list[ToggleSample] = []
    for m in modes:
        reads: dict[str, int] = {}
        for b, block in enumerate(blocks_of(reps, blocks)):
            with make(b) as sw:
                orders = balanced_orders(len(sw))
                pp = Served(children, exe, m, cpu, warmup=rounds[m.name])
                try:
                    for rep in block:
                        for s in (sw[i] for i in orders[rep % len(orders)]):
                            s.on()
                            try:
                                ns, cs = pp.batch(rounds[m.name])
                            finally:
                                s.off()
                            out.append(ToggleSample(rep, s.name, m.name, ns, cs, b))
                finally:
                    pp.close()
                for s in sw:
                    if s.reads is not None:
                        reads[s.name] = reads.get(s.name, 0) + s.reads()
                if stats is not None and bpftool:
                    now = {int(p["id"]): p for p in bpftool_progs(bpftool)}
                    for s in sw:
                        for prog, pid in s.progs.items():
                            p = now.get(pid, {})
                            stats.append(
                                ToggleStat(
                                    b, s.name, m.name, prog, int(p.get("run_cnt", 0)), int(p.get("run_time_ns", 0))
                                )
                            )
        names = [c for c in config_order([s for s in out if s.mode == m.name]) if c != "none"]
        meds = [(name, statistics.median(toggled_added(out, name, m.name))) for name in names]
        summary = ", ".join(f"{name} {med:+.1f}" for name, med in meds)
        log(f"toggled {m.name}: {reps} repetitions in {blocks} blocks; added ns: {summary}")
        # Each collector is read every second, as `top` reads it; a block shorter than that (a
        # --quick run) may end before the first read: said, since that is not what `top` does.
        unread = [name for name, n in reads.items() if n == 0]
        if unread:
            log(f"toggled {m.name}: WARNING: in-process collectors never read (blocks under 1 s?): {', '.join(unread)}")
        log(f"toggled {m.name}: in-process collectors read {min(reads.values(), default=0)} times or more each")
    return out


def config_order(samples: Sequence[ToggleSample]) -> list[str]:
    """The configurations present, CONFIGS' own first, then the others (--toggle-object) as seen:
    the rows' order, whatever order the batches ran in."""
    seen = list(dict.fromkeys(s.config for s in samples))
    return [c for c in CONFIGS if c in seen] + [c for c in seen if c not in CONFIGS]


def toggled_added(samples: Sequence[ToggleSample], config: str, mode: str) -> list[float]:
    base = {s.rep: s.ns_per_round for s in samples if s.config == "none" and s.mode == mode}
    return [s.ns_per_round - base[s.rep] for s in samples if s.config == config and s.mode == mode and s.rep in base]


def config_table(
    configs: Sequence[str],
    modes: Sequence[Mode],
    column: str,
    cell: Callable[[str, str], str],
    label: Callable[[str], str] = str,
) -> str:
    """A row per configuration (named label(config)), a column per mode (headed `{mode}: {column}`),
    cell(config, mode) in each."""
    rows = [[label(c), *(cell(c, m.name) for m in modes)] for c in configs]
    return markdown_table(["configuration", *(f"{m.name}: {column}" for m in modes)], rows)


def toggled_table(samples: Sequence[ToggleSample], modes: Sequence[Mode]) -> str:
    def cell(c: str, mode: str) -> str:
        if c == "none":
            base = [s.ns_per_round for s in samples if s.config == c and s.mode == mode]
            return f"{statistics.median(base):.0f}" if base else "-"
        mine, floor = toggled_added(samples, c, mode), toggled_added(samples, "floor", mode)
        if not mine or not floor:
            return "-"
        med, fmed = statistics.median(mine), statistics.median(floor)
        q = statistics.quantiles(mine, n=4) if len(mine) > 1 else [med, med, med]
        ratio = f" ({med / fmed:.2f}x)" if fmed > 0 else ""
        return f"+{med:.1f}{ratio} [{q[0]:+.0f}..{q[2]:+.0f}]"

    return config_table(
        config_order(samples),
        modes,
        "added ns (ratio to floor) [quartiles]",
        cell,
        lambda c: "none: base ns/round" if c == "none" else c,
    )


def block_spread(samples: Sequence[ToggleSample], modes: Sequence[Mode]) -> str:
    """Per configuration and mode, the lowest and highest of the blocks' own medians: how far one
    load's placement moves a figure (the main table's median is over all repetitions)."""
    blocks = sorted({s.block for s in samples})

    def cell(c: str, mode: str) -> str:
        meds = []
        for b in blocks:
            mine = toggled_added([s for s in samples if s.block == b], c, mode)
            if mine:
                meds.append(statistics.median(mine))
        return f"{min(meds):+.0f}..{max(meds):+.0f}" if meds else "-"

    configs = [c for c in config_order(samples) if c != "none"]
    return config_table(configs, modes, "block medians, lowest..highest", cell)


def aa_gaps(samples: Sequence[ToggleSample], modes: Sequence[Mode]) -> dict[str, float]:
    """Per mode, |median added ns of sockscope - that of its second load|: the same code, so the
    gap is what placement alone does to a row (empty where either row is missing)."""
    out: dict[str, float] = {}
    for m in modes:
        one, two = toggled_added(samples, "sockscope", m.name), toggled_added(samples, AGAIN, m.name)
        if one and two:
            out[m.name] = abs(statistics.median(one) - statistics.median(two))
    return out


def send_first(prog: str) -> tuple[bool, str]:
    """Sort key: the send programs, then the others (receives, the TCP claim's), by name."""
    return "send" not in prog, prog


def toggled_stats_table(stats: Sequence[ToggleStat], modes: Sequence[Mode]) -> str:
    """Per configuration and mode: send + receive program, ns per run (median over blocks)."""

    def cell(c: str, mode: str) -> str:
        parts = []
        for prog in sorted({t.prog for t in stats if t.config == c}, key=send_first):
            per = [
                t.run_time_ns / t.run_cnt for t in stats if (t.config, t.mode, t.prog) == (c, mode, prog) and t.run_cnt
            ]
            if per:
                parts.append(statistics.median(per))
        return " + ".join(f"{v:.1f}" for v in parts) + f" = {sum(parts):.1f}" if parts else "-"

    configs = list(dict.fromkeys(t.config for t in stats))
    table = config_table(configs, modes, "send + receive ns/run", cell)
    # A fallback group runs more than two programs a round (kprobe: entry and return, and the
    # TCP claim's third): which is which, in the cells' order.
    orders = {c: sorted({t.prog for t in stats if t.config == c and t.run_cnt}, key=send_first) for c in configs}
    if any(len(o) > 2 for o in orders.values()):
        table += "\n\nThe programs in each sum, in order:\n" + "\n".join(
            f"- {c}: {' + '.join(o)}" for c, o in orders.items()
        )
    return table


def as_dicts(samples: Sequence[ToggleSample]) -> list[dict[str, object]]:
    return [dataclasses.asdict(s) for s in samples]
