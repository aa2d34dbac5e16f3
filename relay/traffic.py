"""Traffic rates for operators, sampled once a second from the relay's counters.

Clients and rooms count their traffic as it happens (plain integer additions on
the hot path); this meter turns the counters into rates once a second, so the
cost of measuring does not grow with the traffic. It also samples the relay
process's CPU time and resident memory.
"""

import os
import time
from collections import deque
from dataclasses import dataclass

import anyio

from relay.broadcaster import Broadcaster
from relay.client import Client
from relay.control import RATE_HISTORY_SECONDS
from relay.room import Room

SAMPLE_SECONDS = 1.0

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ClientRates:
    """One client's traffic per second over the last sample."""

    frames_in: float = 0.0
    frames_out: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0


_IDLE = ClientRates()


@dataclass(frozen=True, slots=True)
class _ClientCounters:
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int


_ZERO = _ClientCounters(0, 0, 0, 0)


class TrafficMeter:
    """Rates of every client and room, and the relay process's CPU and memory.

    Args:
        broadcaster: the relay state whose counters are sampled.
    """

    def __init__(self, broadcaster: Broadcaster) -> None:
        self._broadcaster = broadcaster
        self._clients: dict[Client, tuple[_ClientCounters, ClientRates]] = {}
        self._rooms: dict[Room, tuple[int, deque[float]]] = {}
        self._sampled_at = time.monotonic()
        self._cpu_seconds = _process_cpu_seconds()
        self.cpu_percent = 0.0
        """CPU used by the relay process over the last sample; 100 is one core."""
        self.rss_bytes = _resident_bytes()
        """The relay process's resident memory at the last sample."""

    async def run(self) -> None:
        """Sample once a second until cancelled."""
        while True:
            await anyio.sleep(SAMPLE_SECONDS)
            self.sample()

    def sample(self) -> None:
        """Turn the counters' growth since the last sample into rates."""
        now = time.monotonic()
        elapsed = max(now - self._sampled_at, 1e-6)
        self._sampled_at = now
        self._sample_clients(elapsed)
        self._sample_rooms(elapsed)

        cpu_seconds = _process_cpu_seconds()
        self.cpu_percent = 100.0 * (cpu_seconds - self._cpu_seconds) / elapsed
        self._cpu_seconds = cpu_seconds
        self.rss_bytes = _resident_bytes()

    def client_rates(self, client: Client) -> ClientRates:
        """The client's rates over the last sample (zero before its first)."""
        entry = self._clients.get(client)
        return entry[1] if entry is not None else _IDLE

    def room_rate(self, room: Room) -> float:
        """Room commands per second over the last sample."""
        entry = self._rooms.get(room)
        return entry[1][-1] if entry is not None and entry[1] else 0.0

    def room_history(self, room: Room) -> tuple[float, ...]:
        """Room commands per second, one per sample, oldest first; fewer than
        RATE_HISTORY_SECONDS while the room is younger than that."""
        entry = self._rooms.get(room)
        return tuple(entry[1]) if entry is not None else ()

    def _sample_clients(self, elapsed: float) -> None:
        sampled: dict[Client, tuple[_ClientCounters, ClientRates]] = {}
        for client in self._broadcaster.clients.values():
            now = _ClientCounters(
                client.frames_in, client.frames_out, client.bytes_in, client.bytes_out
            )
            previous = self._clients.get(client)
            # A client seen for the first time started from zero.
            before = previous[0] if previous is not None else _ZERO
            rates = ClientRates(
                (now.frames_in - before.frames_in) / elapsed,
                (now.frames_out - before.frames_out) / elapsed,
                (now.bytes_in - before.bytes_in) / elapsed,
                (now.bytes_out - before.bytes_out) / elapsed,
            )
            sampled[client] = (now, rates)

        self._clients = sampled

    def _sample_rooms(self, elapsed: float) -> None:
        sampled: dict[Room, tuple[int, deque[float]]] = {}
        for room in self._broadcaster.rooms.values():
            count = room.commands_in
            entry = self._rooms.get(room)
            if entry is None:
                before, history = 0, deque[float](maxlen=RATE_HISTORY_SECONDS)
            else:
                before, history = entry

            history.append((count - before) / elapsed)
            sampled[room] = (count, history)

        self._rooms = sampled


def _process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _resident_bytes() -> int:
    # The second field of statm is the resident set, in pages.
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0
