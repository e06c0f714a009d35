"""Save docs/screenshot.svg: the real `sockscope top` screen (the kernel collector, real loopback
traffic from tests/kernel/traffic.py; two clients find their server by name, through a DNS server
of tests/kernel/dns_tools.py on 127.53.0.1), rendered headless by Textual at 132 x 36. Needs root.

    sudo .venv/bin/python scripts/screenshot.py [--out docs/screenshot.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sockscope.bpf.loader import CollectorOptions
from sockscope.collector.bpf_source import BpfSource
from sockscope.tui.app import TopApp, TopOptions, create_app

REPO = Path(__file__).resolve().parent.parent


def _traffic(name: str, *args: str, tool: str = "traffic") -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", f"tests.kernel.{tool}", "--name", name, *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)


DNS = "127.53.0.1"


async def _shoot(app: TopApp, out: Path, seconds: int, start_clients: Callable[[], None]) -> None:
    async with app.run_test(size=(132, 36)) as pilot:
        await pilot.pause(1.0)  # the collector is running: the clients' DNS answers are seen
        start_clients()
        for _ in range(seconds * 10):
            await pilot.pause(0.1)
        for _ in range(5):  # select a client: its connection shows the name it resolved
            if app.selected is not None and app.selected[2] == "backup-push":
                break
            await pilot.press("down")
            await pilot.pause(0.2)
        out.write_text(app.export_screenshot(title="sockscope top"), encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.svg")
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    procs = []
    try:
        dns = _traffic("dns", "server", "--bind", DNS, "--record=backup.example.net=A:127.0.0.1",
                       "--record=mirror.example.org=CNAME:edge.cdn.example", "--record=edge.cdn.example=A:127.0.0.1",
                       "--seconds", "60", tool="dns_tools")  # fmt: skip
        procs.append(dns)
        assert dns.stdout is not None and json.loads(dns.stdout.readline())["ready"]
        server = _traffic("web-server", "tcp-server", "--bind", "127.0.0.1", "--accept", "3", "--reply", "3000000")
        procs.append(server)
        assert server.stdout is not None
        port = str(json.loads(server.stdout.readline())["port"])
        app = create_app(lambda: BpfSource(CollectorOptions()), TopOptions(interval=1.0))

        def start_clients() -> None:
            for name, host, pace in (("backup-push", "backup.example.net", "400000:0.1:12"),
                                     ("fetch", "mirror.example.org", "2000:0.5:12")):  # fmt: skip
                procs.append(_traffic(name, "client", "--query", host, "--server", DNS, "--connect-port", port,
                                      "--pace", pace, tool="dns_tools"))  # fmt: skip

        asyncio.run(_shoot(app, args.out, args.seconds, start_clients))
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
