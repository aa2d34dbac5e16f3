"""A fixed relay state for snapshot tests: the values that change from run to
run (ports, clocks, rates, CPU) written out, so that screenshots compare."""

from relay.control import (
    ArtistView,
    AuditEntry,
    Ban,
    CommandDetail,
    CommandSummary,
    HistoryPage,
    Lease,
    RelayEvent,
    RelaySnapshot,
    RoomView,
    Totals,
)
from relay.protocol import encode_frame, encode_string

# 2026-12-04 09:30:00 UTC; the tests run with TZ=UTC.
NOW = 1_796_376_600.0


def _rates(base: float) -> tuple[float, ...]:
    return tuple(base * (1 + (second % 12) / 6) for second in range(60))


ROOMS = (
    RoomView(
        "castle", 3, 18_240, 48_500_000, True, True, "3.6.2", "1.0.1", 42.0, _rates(30)
    ),
    RoomView(
        "forest-shot-12",
        2,
        1_512,
        3_400_000,
        True,
        False,
        "3.6.2",
        "1.0.1",
        6.5,
        _rates(4),
    ),
    RoomView("lookdev", 1, 0, 0, False, False, "4.1.0", "1.0.1", 0.0, (0.0,) * 60),
)

ARTISTS = (
    ArtistView(
        "10.0.4.21:51234",
        "ada",
        "10.0.4.21",
        "castle",
        NOW - 3725,
        20.0,
        28.0,
        41_000.0,
        96_000.0,
        0,
        None,
    ),
    ArtistView(
        "10.0.4.22:50112",
        "bob",
        "10.0.4.22",
        "castle",
        NOW - 1810,
        14.0,
        34.0,
        22_000.0,
        104_000.0,
        12_800,
        None,
    ),
    ArtistView(
        "10.0.4.30:49001",
        "chloe",
        "10.0.4.30",
        "castle",
        NOW - 95,
        8.0,
        40.0,
        9_000.0,
        118_000.0,
        0,
        None,
    ),
    ArtistView(
        "10.0.5.11:55320",
        "dev",
        "10.0.5.11",
        "forest-shot-12",
        NOW - 600,
        6.5,
        0.0,
        8_100.0,
        300.0,
        0,
        None,
    ),
    ArtistView(
        "10.0.5.12:55321",
        "eve",
        "10.0.5.12",
        "forest-shot-12",
        NOW - 540,
        0.0,
        6.5,
        0.0,
        8_400.0,
        0,
        None,
    ),
    ArtistView(
        "10.0.6.2:40220", None, "10.0.6.2", None, NOW - 4, 0.0, 0.0, 0.0, 0.0, 0, None
    ),
)

SNAPSHOT = RelaySnapshot(
    taken_at=NOW,
    rooms=ROOMS,
    artists=ARTISTS,
    totals=Totals(
        connections=6,
        rooms=3,
        commands_per_second=48.5,
        bytes_per_second=407_000.0,
        cpu_percent=7.0,
        rss_bytes=86_000_000,
        store_state="ok",
        cluster_state=None,
    ),
)

EVENTS = [
    RelayEvent(1, NOW - 3725, "connect", "connected", None, "10.0.4.21:51234"),
    RelayEvent(2, NOW - 3724, "room", "created", "castle", "10.0.4.21:51234"),
    RelayEvent(3, NOW - 1810, "join", "joined", "castle", "10.0.4.22:50112"),
    RelayEvent(4, NOW - 600, "room", "created", "forest-shot-12", "10.0.5.11:55320"),
    RelayEvent(5, NOW - 120, "drop", "backpressure", None, "10.0.7.3:40002"),
    RelayEvent(6, NOW - 95, "join", "joined", "castle", "10.0.4.30:49001"),
    RelayEvent(7, NOW - 30, "operator", "alice set keep_open on", "castle"),
    RelayEvent(8, NOW - 4, "connect", "connected", None, "10.0.6.2:40220"),
]

COMMANDS = tuple(
    CommandSummary(
        index=index,
        seq=1000 + index,
        type=140 if index % 3 else 201,
        type_name="BLENDER_DATA_UPDATE" if index % 3 else "TRANSFORM",
        size=1400 + 37 * index,
        sender="10.0.4.21:51234" if index % 2 else "10.0.4.22:50112",
        at=NOW - 500 + index,
    )
    for index in range(1, 101)
)

PAGE = HistoryPage(room="castle", total=18_240, commands=COMMANDS)

_PATH = "/Collection/Castle/Tower"

DETAIL = CommandDetail(
    summary=COMMANDS[4],
    leading_path=_PATH,
    head=encode_frame(140, encode_string(_PATH) + bytes(range(48)), 1005)[:96],
    command_id=1005,
)

BANS = [
    Ban("address:10.0.7.3", NOW + 7 * 86400, "kicked by alice", "alice"),
    Ban("address:10.0.9.14", NOW + 3600, "kicked by olga", "olga"),
]

LEASES = [
    Lease("10.0.7.3", "alice", NOW - 3 * 3600, NOW + 21 * 3600, "browser"),
    Lease("10.0.9.14", "olga", NOW - 600, NOW + 86400 - 600, "device"),
]

AUDIT = [
    AuditEntry(NOW - 30, "alice", "keep_open", "castle", "on"),
    AuditEntry(NOW - 110, "alice", "kick", "10.0.7.3:40002", "banned for 1 week"),
    AuditEntry(NOW - 900, "olga", "fork", "castle", "at 1200 into castle-take2"),
    AuditEntry(NOW - 1500, "olga", "kick", "10.0.9.14:51000", "banned for 1 hour"),
]
