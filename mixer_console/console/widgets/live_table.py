"""A DataTable kept equal to a changing set of rows without redrawing it whole."""

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widgets.data_table import ColumnKey

from mixer_console.console.format import shown
from mixer_console.console.widgets.cached_table import CachedCellTable, Cell


def literal(cell: Cell) -> Text:
    """The cell as text shown as it is, but for the characters a terminal would
    act on (see :func:`shown`): DataTable reads a plain ``str`` as Rich markup,
    and names come from clients ("[/]" would not even parse)."""
    return Text(shown(cell)) if isinstance(cell, str) else cell


class LiveTable(CachedCellTable):
    """Rows identified by a key; :meth:`sync` adds, removes and updates cells in
    place, so the view does not flicker and the cursor stays on its row.

    Args:
        columns: (key, label) pairs, in display order.
        sort_columns: the keys of the columns whose text orders the rows (unique
            together, so that the order is stable).
    """

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        sort_columns: Sequence[str],
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._column_specs = tuple(columns)
        self._sort_columns = tuple(sort_columns)
        # The cells of each row as given: comparing them is cheap, so unchanged
        # rows (most of them, most of the time) cost no Text and no repaint.
        self._shown: dict[str, tuple[Cell, ...]] = {}

    def on_mount(self) -> None:
        for key, label in self._column_specs:
            self.add_column(label, key=key)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, None on an empty table."""
        if not self._shown or not self.is_valid_row_index(self.cursor_row):
            return None

        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def sync(self, rows: Mapping[str, Sequence[Cell]]) -> None:
        """Show exactly ``rows`` (key to cells), in the table's order."""
        selected = self.selected_key
        gone = [key for key in self._shown if key not in rows]
        added = [key for key in rows if key not in self._shown]
        for key in gone:
            self.remove_row(key)
            del self._shown[key]

        for key in added:
            cells = tuple(rows[key])
            self.add_row(*(literal(cell) for cell in cells), key=key)
            self._shown[key] = cells

        for key, new_cells in rows.items():
            self._update_row(key, tuple(new_cells))

        if added:
            self.sort(*self._sort_columns, key=_plain_texts)

        if selected is not None and selected in self._shown:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    def _update_row(self, key: str, cells: tuple[Cell, ...]) -> None:
        shown = self._shown[key]
        if shown == cells:
            return

        for (column, _), old, new in zip(self._column_specs, shown, cells, strict=True):
            if old != new:
                text = literal(new)
                # Measuring a column costs a pass over all its rows: only a cell
                # wider than its column asks for it.
                # Known limit: a column stays as wide as the widest value it has
                # shown, even after that row changed or left.
                width = self.columns[ColumnKey(column)].content_width
                self.update_cell(key, column, text, update_width=text.cell_len > width)

        self._shown[key] = cells


def _plain_texts(cells: object) -> tuple[str, ...]:
    values = cells if isinstance(cells, tuple) else (cells,)
    return tuple(str(value) for value in values)
