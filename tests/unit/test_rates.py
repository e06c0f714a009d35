from __future__ import annotations

import pytest

from sockscope.collector.rates import human_bytes, human_rate, rate


def test_rate_normal() -> None:
    assert rate(1000, 2.0) == 500.0


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_rate_zero_or_negative_interval_is_zero(seconds: float) -> None:
    assert rate(1000, seconds) == 0.0


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB"), (-2048, "-2.0 KiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_human_bits_are_decimal() -> None:
    assert human_bytes(125, bits=True) == "1.0 Kb"
    assert human_bytes(100, bits=True) == "800 b"


def test_human_rate() -> None:
    assert human_rate(3072, 2.0) == "1.5 KiB/s"
    assert human_rate(3072, 0.0) == "0 B/s"
