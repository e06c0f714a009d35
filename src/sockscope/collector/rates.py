"""Rate and unit maths: pure functions, tested alone."""

from __future__ import annotations

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_BIT_UNITS = ("b", "Kb", "Mb", "Gb", "Tb", "Pb")


def rate(count: int, seconds: float) -> float:
    """Per-second rate; a zero-length (or negative, clock stepped) interval gives 0."""
    if seconds <= 0:
        return 0.0
    return count / seconds


def human_bytes(n: float, *, bits: bool = False) -> str:
    """1536 -> '1.5 KiB'; with bits, decimal units of bits: 1536 -> '12.3 Kb'."""
    if bits:
        value, units, step = n * 8, _BIT_UNITS, 1000.0
    else:
        value, units, step = float(n), _BYTE_UNITS, 1024.0
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in units:
        if value < step or unit == units[-1]:
            if unit == units[0]:
                return f"{sign}{value:.0f} {unit}"
            return f"{sign}{value:.1f} {unit}"
        value /= step
    raise AssertionError("unreachable")


def human_rate(count: int, seconds: float, *, bits: bool = False) -> str:
    return human_bytes(rate(count, seconds), bits=bits) + "/s"
