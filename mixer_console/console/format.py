"""How numbers, times, rate histories and clients' names read on a narrow
terminal."""

import time
from collections.abc import Sequence

# Eight heights, lowest first: one character per sparkline bucket.
SPARK_LEVELS = "▁▂▃▄▅▆▇█"

# A minute of per-second rates fits in 12 characters, 5 seconds each.
SPARK_WIDTH = 12

_BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")


def shown(text: str) -> str:
    """``text`` with every character that is not printable written out as its
    escape (``\\x1b``): names come from clients, and an escape sequence written
    as it is would clear or recolour the operator's terminal."""
    if text.isprintable():
        return text

    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode()
        for char in text
    )


def format_bytes(count: float) -> str:
    """Decimal units (1 kB = 1000 B), as the benchmarks and the README count."""
    value = float(count)
    for unit in _BYTE_UNITS:
        if abs(value) < 1000 or unit == _BYTE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"

        value /= 1000

    raise AssertionError("unreachable: the last unit always returns")


def format_rate(per_second: float) -> str:
    """A rate in a few characters: 0, 0.4, 12, 1.2k."""
    if per_second <= 0:
        return "0"

    if per_second < 10:
        return f"{per_second:.1f}"

    if per_second < 10_000:
        return f"{per_second:.0f}"

    return f"{per_second / 1000:.1f}k"


def format_byte_rate(per_second: float) -> str:
    """Bytes per second in decimal units, "0" when idle."""
    return "0" if per_second <= 0 else format_bytes(per_second) + "/s"


def format_clock(at: float | None) -> str:
    """Local wall-clock time of day; "-" when unknown."""
    if at is None:
        return "-"

    return time.strftime("%H:%M:%S", time.localtime(at))


def format_moment(at: float) -> str:
    """Local date and time to the minute, for moments days away (a ban's end)."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def format_age(since: float, now: float) -> str:
    """How long ago: 42s, then 5m, 3h04m, 2d05h.

    Counted in whole seconds of the clock, so that every age on screen ticks at
    the same instant, and to the minute past the first one: a table of ages
    then changes (and is repainted) rarely.
    """
    seconds = max(0, int(now) - int(since))
    if seconds < 60:
        return f"{seconds}s"

    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"

    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"

    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def sparkline(rates: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """The rates in ``width`` characters, each the mean of its slice, scaled to
    the largest; an idle minute is a flat line."""
    if not rates:
        return SPARK_LEVELS[0] * width

    buckets = []
    for index in range(width):
        start = index * len(rates) // width
        end = max(start + 1, (index + 1) * len(rates) // width)
        part = rates[start:end]
        buckets.append(sum(part) / len(part))

    peak = max(buckets)
    if peak <= 0:
        return SPARK_LEVELS[0] * width

    top = len(SPARK_LEVELS) - 1
    return "".join(SPARK_LEVELS[round(value / peak * top)] for value in buckets)


def hex_view(data: bytes, width: int = 16) -> str:
    """Offset, hex bytes and printable ASCII, ``width`` bytes a line."""
    lines = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk)
        text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hex_part:<{width * 3 - 1}}  {text}")

    return "\n".join(lines)
