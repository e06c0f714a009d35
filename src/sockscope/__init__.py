"""sockscope: per-process, per-connection network traffic from eBPF."""

from __future__ import annotations

__version__ = "0.1.0"
