"""Mixer message types, their names, and which room commands the history keeps."""

from enum import IntEnum


class MessageType(IntEnum):
    """Message types the relay knows by name; room commands are all types above 100."""

    JOIN_ROOM = 1
    LEAVE_ROOM = 3
    LIST_ROOMS = 4
    CONTENT = 5
    CLEAR_CONTENT = 6
    DELETE_ROOM = 7
    SET_CLIENT_NAME = 11
    SEND_ERROR = 12
    LIST_CLIENTS = 14
    SET_CLIENT_CUSTOM_ATTRIBUTES = 15
    SET_ROOM_CUSTOM_ATTRIBUTES = 16
    SET_ROOM_KEEP_OPEN = 17
    CLIENT_ID = 18
    CLIENT_UPDATE = 19
    ROOM_UPDATE = 20
    ROOM_DELETED = 21
    CLIENT_DISCONNECTED = 22

    # Room commands named for logs only (those PROTOCOL.md and the captures name);
    # the relay treats every type above 100 alike, named or not.
    COMMAND = 100
    FRAME_START_END = 124
    GROUP_BEGIN = 132
    GROUP_END = 133
    QUERY_ANIMATION_DATA = 139
    BLENDER_DATA_UPDATE = 140
    BLENDER_DATA_RENAME = 144
    SHOT_MANAGER_CONTENT = 148
    BLENDER_DATA_CREATE = 151
    BLENDER_DATA_MEDIA = 152
    TRANSFORM = 201
    MESH = 202
    MATERIAL = 203
    ASSIGN_MATERIAL = 204
    FRAME = 205
    PLAY = 206
    PAUSE = 207
    WORLD_SKY = 208
    CLIENT_ID_WRAPPER = 1000


# Types up to this one are handled by the relay; those above are room commands.
LAST_CONTROL_TYPE = 100

_NAMES = {member.value: member.name for member in MessageType}

# Forwarded to the room but never kept: they describe a moment, not the scene.
_TRANSIENT_ROOM_COMMANDS = frozenset(
    {
        MessageType.CLIENT_ID_WRAPPER,
        MessageType.FRAME,
        MessageType.QUERY_ANIMATION_DATA,
    }
)


def type_name(kind: int) -> str:
    """Return the protocol's name for a message type, or ``TYPE_<n>`` for others."""
    return _NAMES.get(kind) or f"TYPE_{kind}"


def is_stored(kind: int) -> bool:
    """Tell whether a room command of this type goes into the room's history."""
    return kind not in _TRANSIENT_ROOM_COMMANDS


def is_mergeable(kind: int) -> bool:
    """Tell whether a room command may replace the last stored one (types 201-998)."""
    return 200 < kind < 999
