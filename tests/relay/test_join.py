"""Joins of large histories."""

from collections.abc import Awaitable, Callable

from tests.mixer_client import MixerClient, room_command

Connect = Callable[[], Awaitable[MixerClient]]


async def test_join_history_of_more_commands_than_iov_max(connect: Connect) -> None:
    """A history of 10,000 small commands reaches a joiner whole.

    Regression: the replay handed all of a batch's frames to one sendmsg call,
    which failed with EMSGSIZE above 1,024 buffers and dropped the joiner.
    """
    creator = await connect()
    joiner = await connect()
    commands = [
        room_command(140, i.to_bytes(4, "little") * 4, i) for i in range(10_000)
    ]
    await creator.create_room("many", commands=commands)

    history = await joiner.join_room("many")

    assert [frame.wire for frame in history] == commands
