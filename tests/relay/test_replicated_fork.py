"""A cluster node whose artist created a room of the same name as a fork the
cluster committed meanwhile: the node follows the cluster."""

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
from store.apply import RoomForked
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


def test_fork_committed_over_an_artists_new_room_replaces_it(
    broadcaster: Broadcaster,
) -> None:
    """Regression: the node kept its artist's new, empty room and hid the fork
    (its members saw none of the fork's commands, its count disagreed with its
    own database, and the operator was told the fork was made); the artist is
    now told and closed, and the room is the fork, as on every other node."""
    closed: list[str] = []
    artist = Client("127.0.0.1", 5000, Outbox(1 << 20), closed.append, closed.append)
    broadcaster.connect(artist)
    broadcaster.handle(artist, join_frame("f"))
    assert broadcaster.rooms["f"].creator is artist

    record = RoomRecord(7, "f", "3.4", "1.0", False, True, False, True, {}, 7.5)
    last = LastCommand(40, 300, b"/p2", 30)
    broadcaster.apply_committed([RoomForked(THERE, record, "r", 3, 90, last)])

    fork = broadcaster.rooms["f"]
    assert (len(fork.history), fork.history.byte_size, fork.store_id) == (3, 90, 7)
    assert fork.is_joinable and not fork.members
    assert artist.room is None
    assert len(closed) == 1 and "fork" in closed[0]
