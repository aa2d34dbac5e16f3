"""Modal questions: confirm a destructive action, ask for a name or a path,
choose a kick's ban. Their texts hold names from clients, shown escaped (see
:func:`~mixer_console.console.format.shown`)."""

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from mixer_console.console.format import shown

# Ban durations offered when kicking, in seconds (None: no ban).
BAN_CHOICES: tuple[tuple[str, float | None], ...] = (
    ("No ban: the artist may reconnect", None),
    ("Ban for 15 minutes", 15 * 60.0),
    ("Ban for 1 hour", 3600.0),
    ("Ban for 1 day", 86400.0),
    ("Ban for 1 week", 7 * 86400.0),
)


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no; Escape and "n" say no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes_label: str = "Yes") -> None:
        super().__init__()
        self._question = question
        self._yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(shown(self._question), classes="question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self._yes_label, variant="error", id="yes")
                yield Button("No", variant="primary", id="no")

    def on_mount(self) -> None:
        # The safe answer has the focus: Enter alone destroys nothing.
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class AskDialog(ModalScreen[str | None]):
    """One line of text; Enter gives it, Escape gives None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self._question = question
        self._value = value
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(shown(self._question), classes="question", markup=False)
            yield Input(shown(self._value), placeholder=self._placeholder, id="answer")
            yield Label("Enter: OK   Escape: cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text:
            self.dismiss(text)
        else:
            hint = "Nothing to do: type an answer first (Escape: cancel)"
            self.query_one(".hint", Label).update(hint)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True)
class KickChoice:
    """A confirmed kick, with the ban chosen (None: no ban)."""

    ban_seconds: float | None


class KickDialog(ModalScreen[KickChoice | None]):
    """Kick an artist, optionally banning them; Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, who: str) -> None:
        super().__init__()
        self._who = who

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(shown(f"Kick {self._who}?"), classes="question", markup=False)
            yield Select(
                [(label, index) for index, (label, _) in enumerate(BAN_CHOICES)],
                value=0,
                allow_blank=False,
                id="ban",
            )
            with Horizontal(classes="buttons"):
                yield Button("Kick", variant="error", id="kick")
                yield Button("Cancel", variant="primary", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "kick":
            self.dismiss(None)
            return

        choice = self.query_one("#ban", Select).value
        index = choice if isinstance(choice, int) else 0
        self.dismiss(KickChoice(BAN_CHOICES[index][1]))

    def action_cancel(self) -> None:
        self.dismiss(None)
