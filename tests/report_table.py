"""The surge table of a report page, read back from its HTML (shared by the unit and e2e tests)."""

from __future__ import annotations

from html.parser import HTMLParser


class _SurgeTable(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "surge-table") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def surge_table_rows(page: str) -> list[list[str]]:
    """The text of each cell of ``table#surge-table``, row by row (entities decoded)."""
    reader = _SurgeTable()
    reader.feed(page)
    return [row for row in reader.rows if row]
