"""The run screen: header, stage pipeline, and tabs for live responses, judgements, pairs, training,
rounds and the log. The loop is another process; this app only reads the database and writes control
requests. Every database call runs in a thread worker that ends by posting a typed message, so the
event loop never waits on SQLite (the loop may hold a write lock for a while).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Input, RichLog, Static, TabbedContent, TabPane, Tabs
from textual.worker import Worker, WorkerState

from selfalign import heldout
from selfalign import metrics as metrics_mod
from selfalign.runs import RunFolder
from selfalign.tui.feed import Feed, FeedClosed, PairView, ResponseView, Snapshot, word_diff
from selfalign.tui.response_tables import ResponseTables
from selfalign.tui.screens import QuitScreen, SearchScreen
from selfalign.tui.widgets import (
    LinePlot,
    decisions_text,
    diff_text,
    fmt,
    header_text,
    health_lines,
    pipeline_table,
    preview,
    rounds_table,
    tab_bindings,
)

POLL_S = 0.5
TABS = ["live", "judgements", "pairs", "training", "rounds", "log"]
TAB_FOCUS = {"live": "#live-table", "judgements": "#judgement-table", "pairs": "#pair-table", "log": "#log-view"}
ROUND_METRICS = metrics_mod.labelled(metrics_mod.ROUNDS_TABLE, short=True)
LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": ""}
ACTION_WORDS = {"pause": "pause", "resume": "resume", "stop": "stop now", "stop_after_stage": "stop after stage"}


class FeedUpdated(Message):
    def __init__(self, snapshot: Snapshot):
        super().__init__()
        self.snapshot = snapshot


class SearchDone(Message):
    def __init__(self, hits: list[ResponseView]):
        super().__init__()
        self.hits = hits


class ControlWritten(Message):
    def __init__(self, action: str, control_id: int, then_exit: bool):
        super().__init__()
        self.action, self.control_id, self.then_exit = action, control_id, then_exit


class RunApp(ResponseTables, App):
    CSS_PATH = "app.tcss"
    TITLE = "selfalign"
    BINDINGS = [
        Binding("p", "control('pause')", "Pause"),
        Binding("r", "control('resume')", "Resume"),
        Binding("s", "control('stop_after_stage')", "Stop after stage"),
        Binding("x", "control('stop')", "Stop now"),
        Binding("slash", "search", "Search"),
        Binding("a", "promote", "Promote rejected round"),
        Binding("q", "quit_app", "Quit"),
        *tab_bindings(TABS),
    ]

    def __init__(self, folder: RunFolder, *, child: subprocess.Popen | None = None, child_output: str | None = None,
                 poll_interval: float = POLL_S, clock: Callable[[], datetime] | None = None):
        super().__init__()
        self.folder = folder
        self.feed = Feed(folder)
        self.child = child  # the loop process `selfalign run` started, if it did
        self.child_output = child_output
        self.child_reported = False
        self.poll_interval = poll_interval
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.views: dict[int, ResponseView] = {}
        self.cells: dict[tuple[str, int], tuple] = {}  # (table, row id) -> the cells it shows
        self.shown: dict[str, object] = {}  # widget -> the data it was last rendered from
        self.pairs: dict[int, PairView] = {}
        self.steps: dict[int, list] = {}
        self.state: dict | None = None
        self.snapshot: Snapshot | None = None
        self.polling = False
        self.polls = 0
        self.pending: dict | None = None  # the last control request: action, id, handled
        self.sort: tuple[str, bool] | None = None
        self.search_screen: SearchScreen | None = None
        self.shown_errors: set[str] = set()
        self.overrides_written = False

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="controls")
        yield Static(id="pipeline")
        with TabbedContent(initial="live", id="tabs"):
            with TabPane("Live", id="live"):
                yield DataTable(id="live-table", cursor_type="row")
            with TabPane("Judgements", id="judgements"):
                yield Input(placeholder="filter: words, round:N, parse:ok|fail, unmet", id="filter")
                yield DataTable(id="judgement-table", cursor_type="row")
            with TabPane("Pairs", id="pairs"):
                yield DataTable(id="pair-table", cursor_type="row")
                yield Static(id="pair-info")
                with Horizontal(id="pair-diff"):
                    with VerticalScroll():
                        yield Static(id="chosen")
                    with VerticalScroll():
                        yield Static(id="rejected")
            with TabPane("Training", id="training"):
                yield Static(id="train-info")
                yield LinePlot("loss", id="loss-plot")
                yield LinePlot("reward margin", id="margin-plot")
            with TabPane("Rounds", id="rounds"), VerticalScroll():
                yield Static(id="rounds-table")
                yield Static(id="health")
                yield Static(id="decisions")
            with TabPane("Log", id="log"):
                yield RichLog(id="log-view", wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"selfalign · {self.folder.name}"
        self.query_one("#live-table", DataTable).add_columns("id", "round", "prompt", "response", "score", "CSR")
        jt = self.query_one("#judgement-table", DataTable)
        for key, label in (("id", "id"), ("round", "rnd"), ("prompt", "prompt"), ("response", "response"),
                           ("rubric", "rubric"), ("csr", "CSR"), ("likelihood", "lik.rank"),
                           ("blackbox", "bb.score"), ("parse", "parse")):
            jt.add_column(label, key=key)
        self.query_one("#pair-table", DataTable).add_columns("id", "round", "margin", "rule", "prompt")
        self.query_one("#header", Static).update(Text(f" {self.folder.name}  loading…"))
        self.set_interval(self.poll_interval, self.poll)
        self.poll()

    # ---------------------------------------------------------------- data flow

    def poll(self) -> None:
        if not self.polling:  # one poll at a time: the feed is not thread-safe, and polls must not pile up
            self.polling = True
            self._poll()

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll(self) -> None:
        with contextlib.suppress(FeedClosed):  # the app is closing
            self.post_message(FeedUpdated(self.feed.poll()))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker errors surface: a notification, once per distinct error."""
        if event.worker.group == "poll" and event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.polling = False
        if event.state == WorkerState.ERROR:
            message = f"{type(event.worker.error).__name__}: {event.worker.error}"
            if message not in self.shown_errors:
                self.shown_errors.add(message)
                self.notify(message, title="could not read the run", severity="error", timeout=10)

    def on_feed_updated(self, message: FeedUpdated) -> None:
        self.polling = False
        if not self.query("#controls"):  # a poll that finished while the app was closing: nothing to draw
            return
        self.polls += 1
        snap = message.snapshot
        self.snapshot, self.state = snap, snap.state
        now = self.clock()
        self._show_controls(snap)
        self._check_child()
        second = int(now.timestamp())  # the header and pipeline show clocks: redraw at most once a second
        pending = self._pending_action()
        self._update("#header", (snap.state, pending, second), lambda: header_text(snap.state, now, pending))
        live = snap.state["state"] in ("running", "paused")
        self._update("#pipeline", (snap.stages, live, second), lambda: pipeline_table(snap.stages, now, live=live))
        if snap.responses:
            self._add_responses(snap.responses)
        if snap.pairs:
            self._add_pairs(snap.pairs)
        if snap.train_steps or self.polls == 1:
            self._show_training(snap.train_steps)
        self._update("#rounds-table", snap.metrics, lambda: rounds_table(
            {k: heldout.shown(m) for k, m in snap.metrics.items()}, ROUND_METRICS))
        self._update("#health", snap.metrics, lambda: health_lines(snap.metrics))
        self._update("#decisions", (snap.decisions, snap.overrides),
                     lambda: decisions_text(snap.decisions, snap.overrides))
        log = self.query_one("#log-view", RichLog)
        for e in snap.events:
            where = f"r{e.round} {e.stage or ''}".strip() if e.round is not None else ""
            log.write(Text.assemble((e.ts[11:19] + " ", "dim"), (f"{e.level:<7} ", LEVEL_STYLE.get(e.level, "")),
                                    (f"[{where}] " if where else "", "cyan"), e.message))

    def _update(self, selector: str, key, build: Callable) -> None:
        """Re-render a Static only when what it shows changed: every update costs a layout and a repaint,
        and most polls change nothing but the tables."""
        if self.shown.get(selector) != key:
            self.shown[selector] = key
            self.query_one(selector, Static).update(build())

    def _check_child(self) -> None:
        """Say once how the loop we started ended (its output file holds the details)."""
        code = self.child.poll() if self.child else None
        if code is None or self.child_reported:
            return
        self.child_reported = True
        words = {0: "finished", 3: "found the run busy", 4: "stopped by request"}.get(code, f"failed (exit {code})")
        self.notify(f"the loop {words}; its output is in {self.child_output}", title="loop exited",
                    severity="information" if code in (0, 4) else "error", timeout=30)

    # ---------------------------------------------------------------- pairs

    def _add_pairs(self, pairs: list[PairView]) -> None:
        table = self.query_one("#pair-table", DataTable)
        for p in pairs:
            self.pairs[p.id] = p
            table.add_row(p.id, p.round, fmt(p.margin), p.rule, preview(p.prompt, 50), key=str(p.id))
        if table.row_count == len(pairs):  # the first pairs: show one right away
            self._show_pair(pairs[0].id)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "pair-table" and event.row_key is not None:
            self._show_pair(int(event.row_key.value))

    def _show_pair(self, pair_id: int) -> None:
        p = self.pairs[pair_id]
        scores = p.scores or {}
        parts = [f"pair {p.id} · round {p.round} · rule {p.rule} · margin {fmt(p.margin)}"]
        for side in ("chosen", "rejected"):
            if isinstance(scores.get(side), dict):
                parts.append(f"{side}: " + ", ".join(f"{k} {fmt(v)}" for k, v in scores[side].items()))
        info = Text(" · ".join(parts[:1]) + "\n", style="bold")
        info.append(preview(p.prompt, 400) + "\n", style="italic")
        info.append("\n".join(parts[1:]), style="dim")
        self.query_one("#pair-info", Static).update(info)
        left, right = word_diff(p.chosen, p.rejected or "")
        chosen = Text.assemble(("CHOSEN\n", "bold green"), diff_text(left, "black on green"))
        if p.rejected is None:
            rejected = Text("SFT example: no rejected response", style="dim")
        else:
            rejected = Text.assemble(("REJECTED\n", "bold red"), diff_text(right, "black on red"))
        self.query_one("#chosen", Static).update(chosen)
        self.query_one("#rejected", Static).update(rejected)

    # ---------------------------------------------------------------- training

    def _show_training(self, steps: list) -> None:
        for s in steps:
            self.steps.setdefault(s.round, []).append(s)
        if not self.steps:
            self.query_one("#train-info", Static).update(Text("no training steps yet", style="dim"))
            return
        k = max(self.steps)
        rows = self.steps[k]
        last = rows[-1]
        self.query_one("#train-info", Static).update(Text.assemble(
            (f"round {k}", "bold"), f" · step {last.step} · lr {fmt(last.lr)} · tokens/s {fmt(last.tokens_per_s)}"
            f" · accuracy {fmt(last.accuracy, 2)} · grad norm {fmt(last.grad_norm)}"))
        self.query_one("#loss-plot", LinePlot).set_values([s.loss for s in rows])
        self.query_one("#margin-plot", LinePlot).set_values([s.reward_margin for s in rows
                                                             if s.reward_margin is not None])

    # ---------------------------------------------------------------- controls

    def _loop_alive(self) -> bool:
        return bool(self.state and self.state.get("pid"))

    def _pending_action(self) -> str | None:
        return self.pending["action"] if self.pending and not self.pending["handled"] else None

    def action_control(self, action: str, then_exit: bool = False) -> None:
        if not self._loop_alive():
            self.notify("no loop is running on this run; nothing to " + ACTION_WORDS[action], severity="warning")
            return
        self._write_control(action, then_exit)

    @work(thread=True, group="control", exit_on_error=False)
    def _write_control(self, action: str, then_exit: bool) -> None:
        with Feed(self.folder) as feed:
            self.post_message(ControlWritten(action, feed.request(action), then_exit))

    def on_control_written(self, message: ControlWritten) -> None:
        if message.then_exit:
            self.exit(message.action)
            return
        self.pending = {"action": message.action, "id": message.control_id, "handled": None,
                        "at": self.clock().strftime("%H:%M:%S")}
        self._show_controls(self.snapshot)
        self.poll()

    def _show_controls(self, snap: Snapshot | None) -> None:
        widget = self.query_one("#controls", Static)
        widget.display = bool(self.pending)
        if not self.pending:
            return
        if snap:
            done = next((c for c in snap.controls if c.id == self.pending["id"] and c.handled), None)
            if done:
                self.pending["handled"] = done.handled_at[11:19]
        words = ACTION_WORDS[self.pending["action"]]
        if self.pending["handled"]:
            widget.update(Text(f" {words} requested {self.pending['at']} · acknowledged by the loop "
                               f"{self.pending['handled']}", style="green"))
        else:
            widget.update(Text(f" {words} requested {self.pending['at']} · waiting for the loop (it checks "
                               "between batches)", style="yellow"))

    def action_tab(self, name: str) -> None:
        self.query_one("#tabs", TabbedContent).active = name

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Focus the tab's main widget, so its keys work at once and focus never lands in the filter box
        (where the number keys would type instead of switching tabs)."""
        target = TAB_FOCUS.get(event.pane.id)
        if target:
            self.query_one(target).focus()
        else:
            event.tabbed_content.query_one(Tabs).focus()

    def action_promote(self) -> None:
        """Keep the newest rejected round after all: the next round the loop starts builds on it."""
        snap = self.snapshot
        rejected = [d.round for d in (snap.decisions if snap else []) if d.kind == "reject"
                    and snap.overrides.get(d.round) != "promote"]
        if not rejected:
            self.notify("no rejected round to promote", severity="warning")
            return
        self._promote(max(rejected))

    @work(thread=True, group="control", exit_on_error=False)
    def _promote(self, round_k: int) -> None:
        with Feed(self.folder) as feed:
            feed.promote(round_k)
        self.call_from_thread(self._promoted, round_k)

    def _promoted(self, round_k: int) -> None:
        self.overrides_written = True
        self.notify(f"round {round_k} promoted: the next round the loop starts builds on it")
        self.poll()

    # ---------------------------------------------------------------- search

    def action_search(self) -> None:
        self.search_screen = SearchScreen(self._search)

        def opened(response_id: int | None) -> None:
            self.search_screen = None
            if response_id is not None:
                self._load_detail(response_id)

        self.push_screen(self.search_screen, opened)

    @work(thread=True, group="search", exclusive=True, exit_on_error=False)
    def _search(self, query: str) -> None:
        with Feed(self.folder) as feed:
            self.post_message(SearchDone(feed.search(query)))

    def on_search_done(self, message: SearchDone) -> None:
        if self.search_screen is not None:
            self.search_screen.show(message.hits)

    # ---------------------------------------------------------------- leaving

    def action_quit_app(self) -> None:
        if not self._loop_alive():
            self.exit("closed")
            return

        def answered(choice: str | None) -> None:
            if choice == "leave":
                self.exit("left running")
            elif choice == "stop":
                self._write_control("stop", True)

        self.push_screen(QuitScreen(), answered)

    def on_unmount(self) -> None:
        self.feed.close()

