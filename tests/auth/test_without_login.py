"""A relay without login behaves as before, and still never keeps a token."""

import json
from collections.abc import Awaitable, Callable

from relay.messages import MessageType
from relay.protocol import encode_json
from tests.mixer_client import MixerClient


async def test_no_login_attribute_without_login(
    connect: Callable[[], Awaitable[MixerClient]],
) -> None:
    """Clients of a relay without login carry no github_login attribute."""
    client = await connect()
    client_id = await client.handshake()

    clients = await client.list_clients()

    assert "github_login" not in clients[client_id]


async def test_token_and_login_are_never_custom_attributes(
    connect: Callable[[], Awaitable[MixerClient]],
) -> None:
    """``mixer_token`` and ``github_login`` sent as custom attributes are neither
    kept nor forwarded, even by a relay without login."""
    client = await connect()
    other = await connect()
    client_id = await client.handshake()
    await other.handshake()
    await other.sync()

    await client.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES,
        encode_json(
            {"mixer_token": "gho_secret", "github_login": "admin", "user_color": 3}
        ),
    )
    await client.sync()
    seen = await other.sync()
    clients = await other.list_clients()

    assert json.dumps(clients[client_id]).count("gho_secret") == 0
    assert "github_login" not in clients[client_id]
    assert clients[client_id]["user_color"] == 3
    assert all(b"gho_secret" not in bytes(frame.wire) for frame in seen)
