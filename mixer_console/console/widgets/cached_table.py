"""A DataTable that renders again only the cells whose value changed."""

from dataclasses import replace
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.containers import ScrollableContainer
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import CursorType

Cell = str | Text

# Room for every visible cell of a tall table in each of its looks (cursor,
# hover, focus), with margin.
CACHED_CELLS = 20_000

CellLines = list[list[Segment]]


def _left_out_of_the_key_list(*classes: type) -> list[BindingType]:
    """The bindings of ``classes``, marked as system bindings, which the key
    list ("?") does not show; for a key bound by several, the first class's
    binding (as a subclass's overrides its base's)."""
    bindings: dict[str, Binding] = {}
    for cls in classes:
        for binding in cls.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding):
                bindings.setdefault(binding.key, replace(binding, system=True))

    return list(bindings.values())


class CachedCellTable(DataTable[Cell]):
    """DataTable forgets every rendered cell whenever any cell changes, so a
    live table that updates a few cells four times a second renders all of its
    visible cells each time; this one keeps each cell's rendering for as long
    as the cell holds the same value object and looks the same.

    Known limit: this overrides DataTable's private ``_render_cell`` (Textual
    8.x, as pinned); a Textual that renames it loses the saving, not correctness.
    """

    # The arrow, page and home keys that every table takes still work, but are
    # not listed: on an 80x24 SSH terminal they pushed the console's own keys
    # below the screen.
    BINDINGS: ClassVar[list[BindingType]] = _left_out_of_the_key_list(
        DataTable, ScrollableContainer
    )

    def __init__(
        self,
        *,
        id: str | None = None,
        cursor_type: CursorType = "row",
        zebra_stripes: bool = False,
    ) -> None:
        # Each cell's place and look to the value last rendered there and its
        # rendering: a new value takes the entry over, so stale renderings do
        # not pile up. Made first: DataTable's set-up may already clear caches.
        self._rendered_cells: LRUCache[tuple[object, ...], tuple[Cell, CellLines]] = (
            LRUCache(CACHED_CELLS)
        )
        super().__init__(id=id, cursor_type=cursor_type, zebra_stripes=zebra_stripes)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> CellLines:
        # Row labels are not used here: DataTable renders them as it does.
        if column_index < 0:
            return super()._render_cell(
                row_index, column_index, base_style, width, cursor, hover
            )

        value = self._cell_value(row_index, column_index)
        # Everything else the rendering depends on: the position (the mouse
        # metadata names it), the row's style (zebra stripes), the width, the
        # cursor and hover, and the focus state.
        key = (
            row_index,
            column_index,
            base_style,
            width,
            cursor,
            hover,
            self.show_cursor,
            self.cell_padding,
            self._show_hover_cursor,
            self._pseudo_class_state,
        )
        cached = self._rendered_cells.get(key)
        if cached is not None and cached[0] is value:
            return cached[1]

        lines = super()._render_cell(
            row_index, column_index, base_style, width, cursor, hover
        )
        self._rendered_cells[key] = (value, lines)
        return lines

    def _cell_value(self, row_index: int, column_index: int) -> Cell:
        """The value shown at the cell; row -1 is the header (column labels)."""
        if row_index < 0:
            return self.ordered_columns[column_index].label

        row_key, column_key = self.coordinate_to_cell_key(
            Coordinate(row_index, column_index)
        )
        return self.get_cell(row_key, column_key)

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._rendered_cells.clear()

    def notify_style_update(self) -> None:
        # A new theme or stylesheet changes colours the key does not hold.
        self._rendered_cells.clear()
        super().notify_style_update()
