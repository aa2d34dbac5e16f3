"""How the console writes figures: sizes, rates, ages, sparklines, hex, filters."""

import pytest

from mixer_console.console.format import (
    SPARK_LEVELS,
    format_age,
    format_bytes,
    format_rate,
    hex_view,
    sparkline,
)
from mixer_console.console.widgets.event_log import matches
from relay.control import RelayEvent


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1_234_567, "1.2 MB")],
)
def test_format_bytes_uses_decimal_units(count: int, text: str) -> None:
    """Sizes read in decimal units, as the benchmarks count them."""
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0, "0"), (-1, "0"), (0.42, "0.4"), (12.4, "12"), (12345, "12.3k")],
)
def test_format_rate_stays_short(rate: float, text: str) -> None:
    """A rate takes a few characters whatever its size."""
    assert format_rate(rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (42, "42s"),
        (312, "5m"),
        (3 * 3600 + 240, "3h04m"),
        (2 * 86400 + 5 * 3600, "2d05h"),
    ],
)
def test_format_age_coarsest_unit_first(seconds: float, text: str) -> None:
    """Ages keep at most two units; a clock skew never shows a negative age."""
    assert format_age(1000.0, 1000.0 + seconds) == text


def test_format_age_ticks_on_whole_seconds() -> None:
    """Two artists who connected in the same second always show the same age."""
    assert format_age(1000.1, 1001.05) == format_age(1000.9, 1001.05) == "1s"


def test_sparkline_scales_to_the_peak() -> None:
    """The busiest slice is the full block, an idle one the lowest."""
    rates = [0.0] * 30 + [10.0] * 30

    line = sparkline(rates, width=6)

    assert line == SPARK_LEVELS[0] * 3 + SPARK_LEVELS[-1] * 3


@pytest.mark.parametrize("rates", [[], [0.0] * 60, [0.0]])
def test_sparkline_of_idle_or_missing_history_is_flat(rates: list[float]) -> None:
    """No traffic, or no history yet, draws a flat line of the full width."""
    assert sparkline(rates, width=12) == SPARK_LEVELS[0] * 12


def test_sparkline_of_short_history_keeps_its_width() -> None:
    """Fewer samples than characters still fill the width."""
    assert len(sparkline([1.0, 2.0, 3.0], width=12)) == 12


def test_hex_view_shows_offsets_bytes_and_text() -> None:
    """Sixteen bytes a line, unprintable bytes as dots."""
    data = bytes(range(0x41, 0x41 + 16)) + b"\x00\xff"

    lines = hex_view(data).splitlines()

    assert lines[0].startswith("00000000  41 42 43")
    assert lines[0].endswith("ABCDEFGHIJKLMNOP")
    assert lines[1].startswith("00000010  00 ff")
    assert lines[1].endswith("..")


def _event(kind: str, text: str, room: str | None = None) -> RelayEvent:
    return RelayEvent(seq=1, at=0.0, kind=kind, text=text, room=room)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], True),
        (["alice"], True),
        (["ALICE".lower(), "castle"], True),
        (["bob"], False),
        (["kind:join"], True),
        (["kind:leave"], False),
        (["kind:join", "bob"], False),
    ],
)
def test_event_filter_needs_every_word(words: list[str], expected: bool) -> None:
    """Every word must occur; kind: asks for one kind exactly."""
    event = _event("join", "alice joined", room="castle")

    assert matches(event, words) is expected
