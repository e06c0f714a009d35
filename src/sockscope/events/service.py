"""The daemon's hand-off: its event socket and its rules, made from the configuration."""

from __future__ import annotations

from collections.abc import Callable

from sockscope.config import Config
from sockscope.events.hub import Hub, Rule
from sockscope.events.server import EventServer


class Handoff:
    """The hub, its socket (when events.enabled) and its rules' actions, started and closed together."""

    def __init__(self, config: Config, report: Callable[[str], None]) -> None:
        ev = config.events
        self.server: EventServer | None = None
        if ev.enabled:
            self.server = EventServer(
                ev.socket, group=ev.group, mode=ev.mode, max_subscribers=ev.max_subscribers, queue=ev.queue,
                stall=ev.stall, report=report,
            )  # fmt: skip
        rules = [Rule(spec.name, spec.matcher, spec.sink(report)) for spec in config.rules]
        self.hub = Hub(rules, [self.server.offer] if self.server is not None else [], report)

    @property
    def wanted(self) -> bool:
        """Anything to hand events to: else the daemon runs without live events (cheaper)."""
        return self.server is not None or bool(self.hub.rules)

    def start(self) -> None:
        """Binds the socket (ServerError: in use by another daemon, a bad group) before the rules'
        actions start, so a refused start leaves nothing running."""
        if self.server is not None:
            self.server.start()
        self.hub.start()

    def check(self) -> None:
        self.hub.check()

    def close(self) -> None:
        self.hub.close()
        if self.server is not None:
            self.server.close()
