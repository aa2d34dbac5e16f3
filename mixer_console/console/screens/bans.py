"""The bans in force, which the operator can lift, the leases GitHub logins
granted, which the operator can revoke, and the audit log of what operators
did."""

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from mixer_console.console.format import format_clock, format_moment
from mixer_console.console.operations import perform
from mixer_console.console.screens.dialogs import ConfirmDialog
from mixer_console.console.widgets.live_table import literal
from relay.control import AuditEntry, Ban, Lease, OperationRefused, RelayControl

BAN_COLUMNS = (
    ("subject", "Banned"),
    ("until", "Until"),
    ("operator", "By"),
    ("reason", "Reason"),
)

LEASE_COLUMNS = (
    ("address", "Address"),
    ("login", "Login"),
    ("granted_at", "Granted"),
    ("expires_at", "Expires"),
    ("via", "Via"),
)

AUDIT_COLUMNS = (
    ("at", "Time"),
    ("operator", "Operator"),
    ("action", "Action"),
    ("target", "Target"),
    ("detail", "Detail"),
)

LEASES_TITLE = "Leases in force (none on a relay without login)"

# Audit entries shown, newest first.
AUDIT_SHOWN = 200


def ban_cells(ban: Ban) -> tuple[Text, ...]:
    """One ban's row, in the order of :data:`BAN_COLUMNS`."""
    cells = (ban.subject, format_moment(ban.until), ban.operator, ban.reason)
    return tuple(literal(cell) for cell in cells)


def lease_cells(lease: Lease) -> tuple[Text, ...]:
    """One lease's row, in the order of :data:`LEASE_COLUMNS`."""
    cells = (
        lease.address,
        lease.login,
        format_moment(lease.granted_at),
        format_moment(lease.expires_at),
        lease.via,
    )
    return tuple(literal(cell) for cell in cells)


def audit_cells(entry: AuditEntry) -> tuple[Text, ...]:
    """One audit entry's row, in the order of :data:`AUDIT_COLUMNS`."""
    cells = (
        format_clock(entry.at),
        entry.operator,
        entry.action,
        entry.target,
        entry.detail,
    )
    return tuple(literal(cell) for cell in cells)


class BansScreen(Screen[None]):
    """Bans, leases and the audit log, read when the screen opens and on "R".

    Args:
        control: the relay.
        operator: who the audit log names for a lifted ban or a revoked lease.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "lift", "Lift ban", tooltip="Let the selected subject back in"),
        Binding(
            "v",
            "revoke",
            "Revoke lease",
            tooltip="End the selected lease and close its address's connections",
        ),
        Binding("R", "reload", "Reload"),
    ]

    def __init__(self, control: RelayControl, operator: str) -> None:
        super().__init__()
        self.control = control
        self.operator = operator

    def compose(self) -> ComposeResult:
        yield Static("Bans, leases and operator actions", id="bans-title", markup=False)
        with Vertical(id="bans-pane", classes="pane"):
            bans: DataTable[Text] = DataTable(id="bans", cursor_type="row")
            for key, label in BAN_COLUMNS:
                bans.add_column(label, key=key)

            yield bans
        with Vertical(id="leases-pane", classes="pane"):
            leases: DataTable[Text] = DataTable(id="leases", cursor_type="row")
            for key, label in LEASE_COLUMNS:
                leases.add_column(label, key=key)

            yield leases
        with Vertical(id="audit-pane", classes="pane"):
            audit: DataTable[Text] = DataTable(id="audit", cursor_type="row")
            for key, label in AUDIT_COLUMNS:
                audit.add_column(label, key=key)

            yield audit
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#bans-pane").border_title = "Bans in force"
        self.query_one("#leases-pane").border_title = LEASES_TITLE
        self.query_one("#audit-pane").border_title = "Audit log, newest first"
        self.load()

    # Known limit: bans, leases and audit entries are read when the screen opens
    # and on "R", so a ban another console sets, or a login made, meanwhile
    # shows only after a reload.
    @work(exclusive=True, group="bans")
    async def load(self) -> None:
        """Read the bans, the leases and the audit log and show them."""
        try:
            bans = await self.control.bans()
            leases = await self._read_leases()
            audit = await self.control.audit_log(AUDIT_SHOWN)
        except (OperationRefused, ConnectionError) as exc:
            self.query_one("#bans-title", Static).update(f"cannot read them: {exc}")
            return

        self.show(bans, leases, audit)

    async def _read_leases(self) -> list[Lease]:
        # A relay older than leases on the admin socket refuses the request:
        # its bans and audit log are still worth showing.
        pane = self.query_one("#leases-pane")
        try:
            leases = await self.control.leases()
        except OperationRefused as exc:
            pane.border_title = f"Leases: cannot read them ({exc})"
            return []

        pane.border_title = LEASES_TITLE
        return leases

    def show(
        self, bans: list[Ban], leases: list[Lease], audit: list[AuditEntry]
    ) -> None:
        bans_table = self.query_one("#bans", DataTable)
        bans_table.clear()
        for ban in bans:
            bans_table.add_row(*ban_cells(ban), key=ban.subject)

        leases_table = self.query_one("#leases", DataTable)
        leases_table.clear()
        for lease in leases:
            leases_table.add_row(*lease_cells(lease), key=lease.address)

        audit_table = self.query_one("#audit", DataTable)
        audit_table.clear()
        for entry in audit:
            audit_table.add_row(*audit_cells(entry))

    def action_reload(self) -> None:
        self.load()

    @work(group="operations")
    async def action_lift(self) -> None:
        table = self.query_one("#bans", DataTable)
        if table.row_count == 0:
            self.app.notify("No ban selected", severity="warning")
            return

        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        subject = str(row_key.value)
        if not await self.app.push_screen_wait(
            ConfirmDialog(f"Lift the ban on {subject}?", "Lift")
        ):
            return

        is_done = await perform(
            self.app,
            f"lift the ban on {subject}",
            self.control.lift_ban(subject, operator=self.operator),
        )
        if is_done:
            self.load()

    @work(group="operations")
    async def action_revoke(self) -> None:
        table = self.query_one("#leases", DataTable)
        if table.row_count == 0:
            self.app.notify("No lease selected", severity="warning")
            return

        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        address = str(row_key.value)
        login = str(table.get_cell(row_key, "login"))
        if not await self.app.push_screen_wait(
            ConfirmDialog(
                f"Revoke the lease of {login} on {address}? Its connections close.",
                "Revoke",
            )
        ):
            return

        is_done = await perform(
            self.app,
            f"revoke the lease of {login} on {address}",
            self.control.revoke_lease(address, operator=self.operator),
        )
        if is_done:
            self.load()
