"""A cluster node whose artist created a room of the same name as a fork, or
as another node's artist, that the cluster committed first: the node follows
the cluster."""

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.broadcaster import Broadcaster
from relay.client import Client
from relay.cluster import ClusterLink
from relay.history import LastCommand
from relay.messages import MessageType
from relay.outbox import Outbox
from relay.protocol import FrameDecoder, encode_frame, encode_string
from store.apply import RoomForked, RoomSaved
from store.repository import RoomRecord
from store.store import Store, StoreOptions

HERE = "127.0.0.1:7001"
THERE = "127.0.0.1:7002"


@pytest.fixture
def broadcaster(tmp_path: Path) -> Iterator[Broadcaster]:
    """A clustered broadcaster whose link is not started but says it has quorum."""
    store = Store.open(tmp_path, StoreOptions())
    link = ClusterLink(HERE, store)
    link.is_available = True
    yield Broadcaster(store, cluster=link)
    store.close(timeout=5)


def join_frame(room: str):
    payload = (
        encode_string(room)
        + encode_string("3.4")
        + encode_string("1.0")
        + struct.pack("<II", 0, 1)
    )
    wire = encode_frame(MessageType.JOIN_ROOM, payload)
    return FrameDecoder(len(wire)).feed(wire)[0]


def artist_creating(broadcaster: Broadcaster, room: str) -> tuple[Client, list[str]]:
    """An artist connected here that has just created ``room``, and the reasons
    its connection was closed for."""
    closed: list[str] = []
    artist = Client("127.0.0.1", 5000, Outbox(1 << 20), closed.append, closed.append)
    broadcaster.connect(artist)
    broadcaster.handle(artist, join_frame(room))
    assert broadcaster.rooms[room].creator is artist
    return artist, closed


def test_fork_committed_over_an_artists_new_room_replaces_it(
    broadcaster: Broadcaster,
) -> None:
    """Regression: the node kept its artist's new, empty room and hid the fork
    (its members saw none of the fork's commands, its count disagreed with its
    own database, and the operator was told the fork was made); the artist is
    now told and closed, and the room is the fork, as on every other node."""
    artist, closed = artist_creating(broadcaster, "f")
    record = RoomRecord(7, "f", "3.4", "1.0", False, True, False, True, {}, 7.5)
    last = LastCommand(40, 300, b"/p2", 30)
    broadcaster.apply_committed([RoomForked(THERE, record, "r", 3, 90, last)])

    fork = broadcaster.rooms["f"]
    assert (len(fork.history), fork.history.byte_size, fork.store_id) == (3, 90, 7)
    assert fork.is_joinable and not fork.members
    assert artist.room is None
    assert len(closed) == 1 and "fork" in closed[0]


def test_room_another_node_created_first_replaces_the_artists_own(
    broadcaster: Broadcaster,
) -> None:
    """Regression: two artists creating the same room on two nodes at once both
    stayed its creator (the second creation then took the row over); the one
    whose creation the cluster committed second is told and closed, and its node
    serves the room the cluster kept."""
    artist, closed = artist_creating(broadcaster, "x")
    record = RoomRecord(3, "x", "4.0", "2.0", False, True, False, False, {}, 5.0)

    broadcaster.apply_committed([RoomSaved(THERE, record)])

    room = broadcaster.rooms["x"]
    assert (room.created_at, room.blender_version, room.store_id) == (5.0, "4.0", 3)
    assert room.creator is None and not room.members
    assert artist.room is None
    assert len(closed) == 1 and "another node" in closed[0]
