"""Room traffic and room attributes as another node sees them."""

import json
import os
import signal
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.messages import MessageType
from relay.protocol import PayloadReader, encode_json, encode_string
from tests.cluster_nodes import (
    Node,
    leader_of,
    make_nodes,
    start_all,
    stop_all,
    wait_available,
    wait_equal_rows,
)
from tests.mixer_client import MixerClient, room_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

KIND = 150  # a stored room command that is never merged
BODY = b"x" * 100
PAUSES = 5
COMMANDS_PER_PAUSE = 200


async def room_counters(node: Node, room: str) -> dict[str, float]:
    """The node's mixer_room_* counter samples for ``room``, by sample name."""
    async with httpx2.AsyncClient(timeout=10.0) as http:
        page = await http.get(f"http://127.0.0.1:{node.http_port}/metrics")

    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(page.text)
        for sample in family.samples
        if sample.name.startswith("mixer_room_") and sample.labels.get("room") == room
    }


async def test_a_command_from_another_node_counts_as_out_where_it_is_forwarded(
    tmp_path: Path,
) -> None:
    """A command sent on one node and forwarded to a member on another counts as
    one command out on the forwarding node, none on the sending node."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        sending = leader_of(nodes)
        forwarding = next(node for node in nodes if node is not sending)
        creator = await MixerClient.connect(sending.port)
        joiner = await MixerClient.connect(forwarding.port)
        await creator.handshake("creator")
        await joiner.handshake("joiner")
        await creator.create_room("r")
        await anyio.sleep(0.5)
        await joiner.join_room("r")
        await creator.send_raw(room_command(KIND, BODY))
        await joiner.expect(KIND)

        sent_counters = await room_counters(sending, "r")
        forwarded_counters = await room_counters(forwarding, "r")
        await creator.aclose()
        await joiner.aclose()

        assert sent_counters["mixer_room_commands_in_total"] == 1
        assert sent_counters["mixer_room_commands_out_total"] == 0
        assert forwarded_counters["mixer_room_commands_in_total"] == 0
        assert forwarded_counters["mixer_room_commands_out_total"] == 1
        assert forwarded_counters["mixer_room_bytes_out_total"] >= len(BODY)
    finally:
        stop_all(nodes)


async def test_a_room_attribute_set_on_one_node_is_announced_on_another(
    tmp_path: Path,
) -> None:
    """A custom room attribute set through one node reaches a client of another
    node as ROOM_UPDATE; setting it again to an equal value announces nothing
    there, and 1 then true count as different values (compared as JSON)."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        setting = leader_of(nodes)
        watching = next(node for node in nodes if node is not setting)
        creator = await MixerClient.connect(setting.port)
        watcher = await MixerClient.connect(watching.port)
        await creator.handshake("creator")
        await watcher.handshake("watcher")
        await creator.create_room("r")
        await watcher.wait_for_room_update("r", "joinable", True)
        for value in (1, 1, True):
            await creator.send(
                MessageType.SET_ROOM_CUSTOM_ATTRIBUTES,
                encode_string("r") + encode_json({"shot": value}),
            )

        updates = []
        with anyio.move_on_after(3.0):
            while True:
                frame = await watcher.receive(timeout=3.0)
                if frame.kind == MessageType.ROOM_UPDATE:
                    update = json.loads(PayloadReader(frame.payload).read_string())
                    if "shot" in update.get("r", {}):
                        updates.append(update["r"]["shot"])

        await creator.aclose()
        await watcher.aclose()

        assert updates == [1, True]
        assert updates[1] is True
    finally:
        stop_all(nodes)


async def test_late_acknowledgements_never_make_a_follower_drop_entries(
    tmp_path: Path,
) -> None:
    """Regression: pysyncobj moved a follower's next index back on each late
    acknowledgement, so the leader sent entries again and the follower dropped
    the rest of its log to take them ("truncating already-applied log entries",
    dozens of times a minute under load). A follower that pauses now and then
    (SIGSTOP) answers a backlog of appends late; every entry still goes once."""
    nodes = make_nodes(tmp_path, 3)
    try:
        start_all(nodes)
        wait_available(nodes)
        leader = leader_of(nodes)
        slow = next(node for node in nodes if node is not leader)
        assert slow.process is not None
        sender = await MixerClient.connect(leader.port)
        await sender.handshake("sender")
        await sender.create_room("r")

        for pause in range(PAUSES):
            os.kill(slow.process.pid, signal.SIGSTOP)
            try:
                for index in range(COMMANDS_PER_PAUSE):
                    body = b"%02d-%04d" % (pause, index) + BODY * 40
                    await sender.send_raw(room_command(KIND, body))
                    if index % 20 == 0:
                        await anyio.sleep(0.005)  # many entries in flight
            finally:
                os.kill(slow.process.pid, signal.SIGCONT)

            for index in range(COMMANDS_PER_PAUSE):
                body = b"%02d+%04d" % (pause, index) + BODY * 40
                await sender.send_raw(room_command(KIND, body))
                if index % 20 == 0:
                    await anyio.sleep(0.005)  # the backlog is acknowledged now

        await sender.sync()
        await sender.aclose()
        total = PAUSES * 2 * COMMANDS_PER_PAUSE
        rows = wait_equal_rows(nodes, commands=total)
        truncations = [
            (node.name, event["event"])
            for node in nodes
            for event in node.events()
            if "truncating" in str(event.get("event"))
        ]

        assert len(rows["commands"]) == total
        assert truncations == []
    finally:
        stop_all(nodes)
