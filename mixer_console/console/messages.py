"""What the relay feed tells the console's widgets, as Textual messages."""

from dataclasses import dataclass

from textual.message import Message

from relay.control import RelayEvent, RelaySnapshot


@dataclass
class SnapshotArrived(Message):
    """The relay's state at one instant; a newer one makes an older one moot."""

    snapshot: RelaySnapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotArrived)


@dataclass
class EventsArrived(Message):
    """New lines for the event log, oldest first."""

    events: list[RelayEvent]


@dataclass
class RelayStateChanged(Message):
    """The relay became reachable or not; ``text`` says what the operator sees."""

    is_reachable: bool
    text: str
