"""The soak benchmark's diagnosis mode (bench/soak.py --tracemalloc): the daemon in a child Python process,
built as the CLI builds it, with tracemalloc started; snapshots compared with a baseline taken once the
caches are full, and the allocation sites that grew most, per minute."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TM_LOG = "soak.py tracemalloc:"  # the traced daemon's own lines on its stderr


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for pid {pid}")  # soak.py reports OSError as a failure


def _size(obj: Any, *attrs: str) -> int | None:
    """len() of obj.attr1.attr2..., None when it is not there (the daemon's internals may change)."""
    for a in attrs:
        obj = getattr(obj, a, None)
    try:
        return len(obj) if obj is not None else None
    except TypeError:
        return None


def _caches(daemon: Any, source: Any) -> dict[str, int | None]:
    from sockscope.collector import procfs

    w = daemon.writer
    return {"identities": _size(source, "resolver"), "sock_fallback": _size(source, "_socks"),
            "lifecycle_tcp": _size(source, "lifecycle", "_tcp"), "lifecycle_udp": _size(source, "lifecycle", "_udp"),
            "cgroup_paths": _size(source, "resolver", "_cgroups", "_paths"),
            "backlog": _size(daemon, "backlog"),
            "writer_procs": _size(w, "_procs"), "writer_conns": _size(w, "_conns"), "writer_exes": _size(w, "_exes"),
            "writer_last_seen": _size(w, "_last_seen"),
            "user_names": procfs.user_name.cache_info().currsize}  # fmt: skip


def _site(frame: Any) -> str:
    name = str(frame.filename)
    for root in (str(REPO_ROOT / "src") + "/", str(REPO_ROOT) + "/", "/site-packages/", "/lib/python3"):
        if root in name:
            name = name.split(root, 1)[1]
            break
    return f"{name}:{frame.lineno}"


def _diffs(stats: Sequence[Any], minutes: float, n: int) -> list[dict[str, Any]]:
    out = []
    for d in sorted(stats, key=lambda d: -d.size_diff)[:n]:
        # A traceback runs from the oldest frame to the allocation: the site is the last one.
        out.append({"site": _site(d.traceback[-1]), "stack": [_site(f) for f in reversed(d.traceback)],
                    "size_diff_mb": d.size_diff / 1e6, "count_diff": d.count_diff, "size_mb": d.size / 1e6,
                    "mb_per_min": d.size_diff / 1e6 / minutes if minutes > 0 else 0.0})  # fmt: skip
    return out


def _watch(daemon: Any, source: Any, stop: Any, args: argparse.Namespace) -> None:
    import collections
    import gc

    out = Path(args.tracemalloc_out)
    flt = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
           tracemalloc.Filter(False, "<unknown>")]  # fmt: skip
    t0 = time.monotonic()
    data: dict[str, Any] = {"frames": args.tracemalloc_frames, "snapshots": []}

    def state() -> dict[str, Any]:
        types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        return {"t": round(time.monotonic() - t0, 1), "traced_mb": tracemalloc.get_traced_memory()[0] / 1e6,
                "rss_mb": rss_mb(os.getpid()), "caches": _caches(daemon, source), "types": types}  # fmt: skip

    if stop.wait(args.tracemalloc_baseline):
        return
    base, base_state = tracemalloc.take_snapshot().filter_traces(flt), state()
    data["baseline"] = {k: v for k, v in base_state.items() if k != "types"}
    prev, prev_t = base, base_state["t"]
    while not stop.wait(max(0.0, prev_t + args.tracemalloc_every - (time.monotonic() - t0))):
        snap, st = tracemalloc.take_snapshot().filter_traces(flt), state()
        key = "traceback" if args.tracemalloc_frames > 1 else "lineno"
        types = st.pop("types")
        grown = [(k, v - base_state["types"].get(k, 0)) for k, v in types.items()]
        st["types_grown"] = sorted((kv for kv in grown if kv[1] > 0), key=lambda kv: -kv[1])[:10]
        st["vs_baseline"] = _diffs(snap.compare_to(base, key), (st["t"] - base_state["t"]) / 60, 40)
        st["vs_previous"] = _diffs(snap.compare_to(prev, key), (st["t"] - prev_t) / 60, 15)
        data["snapshots"].append(st)
        prev, prev_t = snap, st["t"]
        out.write_text(render_tracemalloc(data), encoding="utf-8")
        Path(f"{out}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        top = st["vs_baseline"][0] if st["vs_baseline"] else None
        print(f"{TM_LOG} {st['t']:.0f} s: traced {st['traced_mb']:.1f} MB, RSS {st['rss_mb']:.1f} MB; top growth"
              f" {top['site'] if top else '-'} {top['size_diff_mb'] if top else 0:+.2f} MB; {out}",
              file=sys.stderr, flush=True)  # fmt: skip


def tracemalloc_child(args: argparse.Namespace) -> int:
    """The daemon as `sockscope daemon` builds it, in this process, traced; a thread takes the snapshots."""
    import tracemalloc

    tracemalloc.start(args.tracemalloc_frames)
    from sockscope import config as config_mod
    from sockscope.bpf.loader import CollectorOptions, count_groups_for
    from sockscope.collector.bpf_source import BpfSource
    from sockscope.daemon import Daemon, stderr_log
    from sockscope.store.sqlite import open_writer

    db = str(args.db)
    cfg = config_mod.load(None, [f"daemon.database={json.dumps(db)}", f"daemon.interval={args.interval:g}"])
    hooks = os.environ.get("SOCKSCOPE_HOOKS", "").strip() or cfg.collector.hooks
    options = CollectorOptions(max_flows=cfg.collector.max_flows, udp_idle=cfg.udp.idle_timeout,
                               splice=cfg.collector.splice, count_groups=count_groups_for(hooks))  # fmt: skip
    source = BpfSource(options)
    daemon = Daemon(cfg, source, lambda: open_writer(db, log=stderr_log))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    threading.Thread(target=_watch, args=(daemon, source, stop, args), daemon=True).start()
    return int(daemon.run(stop))


def render_tracemalloc(data: dict[str, Any]) -> str:
    snaps = data.get("snapshots") or []
    base = data.get("baseline")
    if base is None or not snaps:
        return "## tracemalloc\n\nNo snapshot after the baseline (run longer than --tracemalloc-baseline).\n"
    last = snaps[-1]
    lines = [f"## tracemalloc (frames {data['frames']}): baseline at {base['t']:.0f} s, last at {last['t']:.0f} s",
             "", "| at s | traced MB | RSS MB | " + " | ".join(base["caches"]) + " |",
             "| ---: " * (3 + len(base["caches"])) + "|"]  # fmt: skip
    for s in [base, *snaps]:
        caches = " | ".join("-" if v is None else f"{v:,}" for v in s["caches"].values())
        lines.append(f"| {s['t']:.0f} | {s['traced_mb']:.1f} | {s['rss_mb']:.1f} | {caches} |")
    # Each site's growth against the baseline at every snapshot: growing in each one = keeps growing.
    series: dict[str, list[float | None]] = {}
    for i, s in enumerate(snaps):
        for d in s["vs_baseline"]:
            series.setdefault(" ← ".join(d["stack"]), [None] * len(snaps))[i] = d["size_diff_mb"]
    lines += ["", f"Top growth since the baseline ({(last['t'] - base['t']) / 60:.1f} min), by allocation site;"
              " the last column: the growth at each snapshot (MB), '?' when not in that snapshot's top 40:", "",
              "| site | MB | MB/min | blocks | now MB | growth at each snapshot |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for d in last["vs_baseline"][:15]:
        where = " ← ".join(d["stack"])
        steps = " ".join("?" if v is None else f"{v:.2f}" for v in series.get(where, []))
        lines.append(f"| `{where}` | {d['size_diff_mb']:+.2f} | {d['mb_per_min']:+.3f} | {d['count_diff']:+,} |"
                     f" {d['size_mb']:.2f} | {steps} |")  # fmt: skip
    lines += ["", "Since the previous snapshot:", ""]
    lines += [f"- `{d['site']}` {d['size_diff_mb']:+.2f} MB ({d['mb_per_min']:+.3f} MB/min,"
              f" {d['count_diff']:+,} blocks)" for d in last["vs_previous"][:8]]  # fmt: skip
    grown = ", ".join(f"{k} {v:+,}" for k, v in last.get("types_grown", []))
    lines += ["", f"GC-tracked objects grown since the baseline, by type: {grown or 'none'}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
