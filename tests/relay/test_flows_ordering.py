"""Ordering while a history streams (PROTOCOL.md §4, §7).

Each test talks to a real relay over real TCP on 127.0.0.1; see tests/relay/flows.py
for how "nothing else arrived" is checked.
"""

from dataclasses import dataclass

import anyio

from relay.messages import MessageType
from relay.protocol import (
    Frame,
    PayloadReader,
    encode_frame,
)
from tests.mixer_client import join_payload
from tests.relay.flows import (
    BIG_COMMAND_BYTES,
    BIG_HISTORY,
    ROOM,
    TRANSIENT,
    Connect,
    command,
    open_clients,
    receive_until_command,
    room_with_members,
    settle,
    significant,
)

# ---------------------------------------------------------------- §7 ordering


def big_history(count: int = BIG_HISTORY) -> list[bytes]:
    return [
        command(151, f"/image/{index}", bytes([index % 251]) * BIG_COMMAND_BYTES, index)
        for index in range(count)
    ]


async def test_join_direct_replies_wait_for_history(connect: Connect) -> None:
    """Direct replies to requests a joiner sends right after JOIN_ROOM arrive only
    after the whole history and the JOIN_ROOM confirmation."""
    history = big_history()
    _creator, joiner = await room_with_members(connect, 1, outsiders=1, history=history)
    await joiner.send_raw(
        encode_frame(MessageType.JOIN_ROOM, join_payload(ROOM))
        + encode_frame(MessageType.CLIENT_ID)
        + encode_frame(MessageType.LIST_ROOMS)
        + encode_frame(2)
    )
    frames = significant(await joiner.receive_until(MessageType.SEND_ERROR, timeout=30))
    kinds = [frame.kind for frame in frames]
    confirmed = kinds.index(MessageType.JOIN_ROOM)

    assert kinds[0] == MessageType.CLEAR_CONTENT
    assert [bytes(f.wire) for f in frames[:confirmed] if f.kind > 100] == history
    assert kinds[1 : confirmed + 1] == [151] * len(history) + [MessageType.JOIN_ROOM]
    assert kinds[confirmed + 1 :] == [
        MessageType.CLIENT_UPDATE,
        MessageType.CLIENT_ID,
        MessageType.LIST_ROOMS,
        MessageType.SEND_ERROR,
    ]


@dataclass(frozen=True)
class Sent:
    """One room command the test sent, with what the merge rule looks at."""

    kind: int
    command_id: int
    path: str
    wire: bytes


def merged(commands: list[Sent]) -> list[Sent]:
    """The history those commands leave, by the rules of PROTOCOL.md §5."""
    history: list[Sent] = []
    for sent in commands:
        if sent.kind in TRANSIENT:
            continue

        if (
            history
            and 200 < sent.kind < 999
            and history[-1].kind == sent.kind
            and history[-1].path == sent.path
        ):
            history.pop()

        history.append(sent)

    return history


# The live pattern: drags of one object (merged), frames (never stored), data
# updates (never merged), and a different type on the same path (not merged).
LIVE_PATTERN = [
    (201, "/cube"),
    (201, "/cube"),
    (205, "/frame"),
    (201, "/cube"),
    (140, "/data"),
    (201, "/sphere"),
    (205, "/frame"),
    (202, "/sphere"),
]


def live_commands(start: int, count: int) -> list[Sent]:
    commands = []
    for index in range(start, start + count):
        kind, path = LIVE_PATTERN[index % len(LIVE_PATTERN)]
        size = 32 * 1024 if kind == 140 else 16
        body = index.to_bytes(4, "little") * (size // 4)
        wire = command(kind, path, body, command_id=10_000 + index)
        commands.append(Sent(kind, 10_000 + index, path, wire))

    return commands


def allowed_join_streams(reference: list[Sent], first: int, last: int):
    """Every stream a joiner may receive, for each moment its join could have been
    handled: after ``reference[:t]``, with first <= t <= last.

    The joiner gets the history as it stood then (the merge rule applied to what
    came before), then everything after, live. One case more: when the first
    stored command after the join merges with the history's last entry before the
    replay reached that entry, the joiner gets only the newer one (the older one
    is no longer in the history), which is still exactly once per stored state.
    """
    for moment in range(first, last + 1):
        history = merged(reference[:moment])
        live = reference[moment:]
        yield moment, history, live
        replacer = next((sent for sent in live if sent.kind not in TRANSIENT), None)
        if (
            history
            and replacer is not None
            and merged([history[-1], replacer]) == [replacer]
        ):
            yield moment, history[:-1], live


async def test_join_while_live_delivers_every_command_once_in_order(
    connect: Connect,
) -> None:
    """A client joining a big room while a member keeps sending (merged drags,
    transient frames) gets each command exactly once and in order, and a member
    keeps receiving while the joiner's history is still pending.

    The bystander member, in the room all along, receives the reference stream:
    the uploaded history (merged) then every live command. The joiner's join is
    handled at some point t of that stream, between the last command before its
    JOIN_ROOM was sent and the first sent after CLEAR_CONTENT came back. What it
    must receive is the history as it stood at t (stored commands before t, with
    the merge rule applied: superseded drags and transient frames sent before t
    are not replayed), before JOIN_ROOM, then every command after t, transient
    ones included, in order; if the first stored command after t merges with the
    history's last entry, that entry may be skipped, since the relay no longer
    holds it. The test accepts exactly those streams, for any t in that window,
    and checks that applying the merge rule to what the joiner got yields the
    relay's final history.
    """
    upload = [*big_history(), command(201, "/cube", b"start", command_id=5000)]
    creator, bystander, joiner = await open_clients(connect, 3)
    await creator.create_room(ROOM, commands=upload)
    received_history = await bystander.join_room(ROOM)
    await settle([creator, bystander, joiner])
    # Phase one ends on a drag of /cube and phase two starts with another, which
    # replaces the history's last entry while the joiner's replay is pending.
    phase_one = live_commands(0, 65)
    phase_two = live_commands(65, 64)
    phase_three = live_commands(129, 256)
    end = Sent(140, 99_999, "/end", command(140, "/end", command_id=99_999))
    live = [*phase_one, *phase_two, *phase_three, end]
    to_bystander: list[Frame] = []
    phase_two_seen = anyio.Event()

    async def follow_bystander() -> None:
        with anyio.fail_after(60):
            while True:
                frame = await bystander.receive()
                to_bystander.append(frame)
                if frame.kind > 100 and frame.command_id == phase_two[-1].command_id:
                    phase_two_seen.set()

                if frame.kind > 100 and frame.command_id == end.command_id:
                    return

    async def send_all(commands: list[Sent]) -> None:
        for sent in commands:
            await creator.send_raw(sent.wire)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow_bystander)
        await send_all(phase_one)
        await joiner.send(MessageType.JOIN_ROOM, join_payload(ROOM))
        await joiner.expect(MessageType.CLEAR_CONTENT)
        await send_all(phase_two)
        with anyio.fail_after(30):
            await phase_two_seen.wait()

        tasks.start_soon(send_all, [*phase_three, end])
        to_joiner = await receive_until_command(joiner, end.command_id, timeout=60)

    sent_by_id = {sent.command_id: sent for sent in live}
    uploaded = [
        Sent(w.kind, w.command_id, PayloadReader(w.payload).read_string(), w.wire)
        for w in received_history
    ]
    reference = uploaded + live
    bystander_ids = [f.command_id for f in to_bystander if f.kind > 100]
    confirmed = next(
        i for i, f in enumerate(to_joiner) if f.kind == MessageType.JOIN_ROOM
    )
    joiner_commands = [f for f in to_joiner if f.kind > 100]
    joiner_ids = [f.command_id for f in joiner_commands]
    before_confirmation = sum(1 for f in to_joiner[:confirmed] if f.kind > 100)
    window = range(len(uploaded), len(uploaded) + len(phase_one) + 1)
    matches = [
        (moment, len(history))
        for moment, history, after in allowed_join_streams(
            reference, window.start, window.stop - 1
        )
        if [sent.command_id for sent in history + after] == joiner_ids
    ]
    final = merged(reference)
    rooms = await creator.list_rooms()
    joiner_as_sent = [
        Sent(f.kind, f.command_id, PayloadReader(f.payload).read_string(), b"")
        for f in joiner_commands
    ]

    assert [bytes(sent.wire) for sent in uploaded] == upload
    assert bystander_ids == [sent.command_id for sent in live]
    assert all(
        bytes(f.wire) == sent_by_id[f.command_id].wire
        for f in to_bystander
        if f.kind > 100
    )
    assert len(set(joiner_ids)) == len(joiner_ids), "a command arrived twice"
    assert matches, f"joiner stream fits no join moment: ids {joiner_ids[-300:]}"
    assert before_confirmation >= min(count for _moment, count in matches)
    assert all(
        bytes(f.wire) == sent_by_id[f.command_id].wire
        for f in joiner_commands
        if f.command_id in sent_by_id
    )
    assert [s.command_id for s in merged(joiner_as_sent)] == [
        s.command_id for s in final
    ]
    assert rooms[ROOM]["command_count"] == len(final)
    assert rooms[ROOM]["byte_size"] == sum(len(sent.wire) for sent in final)
