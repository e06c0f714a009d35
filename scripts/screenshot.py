"""Save docs/screenshot.svg: the real `sockscope top` screen (the kernel collector, real loopback
traffic from tests/kernel/traffic.py), rendered headless by Textual at 132 x 36. Needs root.

    sudo .venv/bin/python scripts/screenshot.py [--out docs/screenshot.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

from sockscope.bpf.loader import CollectorOptions
from sockscope.collector.bpf_source import BpfSource
from sockscope.tui.app import TopApp, TopOptions, create_app

REPO = Path(__file__).resolve().parent.parent


def _traffic(name: str, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.kernel.traffic", "--name", name, *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)


async def _shoot(app: TopApp, out: Path, seconds: int) -> None:
    async with app.run_test(size=(132, 36)) as pilot:
        for _ in range(seconds * 10):
            await pilot.pause(0.1)
        out.write_text(app.export_screenshot(title="sockscope top"), encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.svg")
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    procs = []
    try:
        server = _traffic("web-server", "tcp-server", "--bind", "127.0.0.1", "--accept", "2", "--reply", "3000000")
        procs.append(server)
        assert server.stdout is not None
        port = str(json.loads(server.stdout.readline())["port"])
        procs.append(_traffic("backup-push", "tcp-client", "--host", "127.0.0.1", "--port", port,
                              "--pace", "400000:0.1:12"))  # fmt: skip
        procs.append(_traffic("fetch", "tcp-client", "--host", "127.0.0.1", "--port", port,
                              "--pace", "2000:0.5:12"))  # fmt: skip
        app = create_app(lambda: BpfSource(CollectorOptions()), TopOptions(interval=1.0))
        asyncio.run(_shoot(app, args.out, args.seconds))
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
