"""The run screen's two response tables: live (newest first) and judgements (filtered, sortable by any
column), kept to a bounded number of rows, with a response's full detail on Enter. Mixed into RunApp,
whose state (views, cells, sort, folder) they use.
"""

from __future__ import annotations

from textual import work
from textual.message import Message
from textual.widgets import DataTable, Input

from selfalign.tui.feed import KEEP_RESPONSES, Feed, ResponseView, matches
from selfalign.tui.screens import ResponseScreen
from selfalign.tui.widgets import fmt, preview

LIVE_ROWS = 300


class DetailLoaded(Message):
    def __init__(self, detail: dict):
        super().__init__()
        self.detail = detail


class ResponseTables:
    # ---------------------------------------------------------------- responses: live and judgements

    def _add_responses(self, views: list[ResponseView]) -> None:
        live = self.query_one("#live-table", DataTable)
        table = self.query_one("#judgement-table", DataTable)
        query = self.query_one("#filter", Input).value
        prompt_w, text_w = self._widths(34)
        for v in views:
            self.views[v.id] = v
            live_cells = (v.id, v.round, preview(v.prompt, prompt_w), preview(v.text, text_w), fmt(v.rubric_score),
                          fmt(v.csr, 2))
            self._put_row(live, v.id, live_cells)
            if matches(v, query):
                self._put_row(table, v.id, self._judgement_cells(v))
            elif self.cells.pop(("judgement-table", v.id), None) is not None:  # no longer matches the filter
                table.remove_row(str(v.id))
        while len(self.views) > KEEP_RESPONSES:  # the oldest leave (dicts keep insertion order)
            oldest = next(iter(self.views))
            del self.views[oldest]
            if str(oldest) in table.rows:
                table.remove_row(str(oldest))
                self.cells.pop(("judgement-table", oldest), None)
        extra = live.row_count - LIVE_ROWS
        if extra > 0:
            for key in sorted(int(k.value) for k in live.rows)[:extra]:
                live.remove_row(str(key))
                self.cells.pop(("live-table", key), None)
        if views:
            live.sort(key=lambda row: -int(row[0]))  # newest first
        if self.sort:
            self._sort_judgements()

    def _put_row(self, table: DataTable, row_id: int, cells: tuple) -> None:
        """Add the row, or update only the cells that changed (each update costs a refresh)."""
        key = (table.id, row_id)
        old = self.cells.get(key)
        if old is None:
            table.add_row(*cells, key=str(row_id))
        else:
            for column, before, after in zip(table.columns, old, cells, strict=True):
                if before != after:
                    table.update_cell(str(row_id), column, after)
        self.cells[key] = cells

    def _widths(self, fixed: int) -> tuple[int, int]:
        """Preview widths for the prompt and response columns, so a row fits the terminal's width."""
        room = max(24, self.size.width - fixed)
        return room * 2 // 5, room - room * 2 // 5

    def _judgement_cells(self, v: ResponseView) -> tuple:
        prompt_w, text_w = self._widths(66)
        return (v.id, v.round, preview(v.prompt, prompt_w), preview(v.text, text_w), fmt(v.rubric_score),
                fmt(v.csr, 2), fmt(v.likelihood_rank), fmt(v.blackbox_score), v.parse_status)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._rebuild_judgements()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":  # Enter: done filtering, back to the table (and its keys)
            self.query_one("#judgement-table", DataTable).focus()

    def _rebuild_judgements(self) -> None:
        table = self.query_one("#judgement-table", DataTable)
        query = self.query_one("#filter", Input).value
        table.clear()
        self.cells = {key: cells for key, cells in self.cells.items() if key[0] != "judgement-table"}
        for v in self.views.values():
            if matches(v, query):
                self._put_row(table, v.id, self._judgement_cells(v))
        if self.sort:
            self._sort_judgements()

    SORT_KEYS = {"id": lambda v: v.id, "round": lambda v: v.round, "rubric": lambda v: v.rubric_score,
                 "csr": lambda v: v.csr, "likelihood": lambda v: v.likelihood_rank,
                 "blackbox": lambda v: v.blackbox_score, "parse": lambda v: v.parse_status,
                 "prompt": lambda v: v.prompt, "response": lambda v: v.text}

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table.id != "judgement-table":
            return
        column = event.column_key.value
        reverse = bool(self.sort and self.sort[0] == column and not self.sort[1])
        self.sort = (column, reverse)
        self._sort_judgements()

    def _sort_judgements(self) -> None:
        column, reverse = self.sort
        get = self.SORT_KEYS[column]

        def key(row):  # missing values last in either direction
            view = self.views.get(int(row[0]))
            value = get(view) if view else None
            present = value is not None
            return (present, value if present else 0) if reverse else (not present, value if present else 0)

        table = self.query_one("#judgement-table", DataTable)
        table.sort(key=key, reverse=reverse)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id in ("live-table", "judgement-table"):
            self._load_detail(int(event.row_key.value))

    @work(thread=True, group="detail", exit_on_error=False)
    def _load_detail(self, response_id: int) -> None:
        with Feed(self.folder) as feed:  # its own connection: this runs beside a poll
            self.post_message(DetailLoaded(feed.detail(response_id)))

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        if message.detail:
            self.push_screen(ResponseScreen(message.detail))
