"""The comparison screen: notes, settings (differences only by default), metrics per round with an
overlaid plot, and held-out answers joined by prompt. It renders `selfalign.compare.compare()`'s data;
everything it shows is computed there, so `--format md|json` shows the same."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from selfalign import verifiers
from selfalign.compare import points
from selfalign.tui.feed import word_diff
from selfalign.tui.widgets import SERIES_STYLES, RoundsPlot, diff_text, fmt, preview, tab_bindings


class CompareApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "selfalign compare"
    BINDINGS = [
        Binding("d", "toggle_differences", "Differences only / all settings"),
        Binding("q", "quit", "Quit"),
        *tab_bindings(["settings", "metrics", "answers"]),
    ]

    def __init__(self, result: dict[str, Any]):
        super().__init__()
        self.result = result
        self.names = [r["name"] for r in result["runs"]]
        self.differences_only = True

    def compose(self) -> ComposeResult:
        yield Static(self._notes(), id="notes")
        with TabbedContent(initial="settings", id="tabs"):
            with TabPane("Settings", id="settings"):
                yield DataTable(id="settings-table", cursor_type="row")
            with TabPane("Metrics", id="metrics"):
                yield DataTable(id="metrics-table", cursor_type="row")
                yield RoundsPlot(id="metrics-plot")
            with TabPane("Answers", id="answers"):
                yield DataTable(id="answers-table", cursor_type="row")
                with Horizontal(id="answers-side"):
                    for i, _ in enumerate(self.names):
                        with VerticalScroll():
                            yield Static(id=f"answer-{i}")
        yield Footer()

    def _notes(self) -> Text:
        text = Text()
        for i, r in enumerate(self.result["runs"]):
            text.append(f" {r['name']} ", style=f"reverse {SERIES_STYLES[i % 6]}")
            rounds = ", ".join(map(str, r["rounds_done"])) or "none"
            text.append(f" {r['recipe']} on {r['model']}; rounds {rounds}: ")
            text.append((r["note"] or "(no note)") + "\n", style="italic")
        for p in self.result.get("paired", []):
            text.append(f" {p['run']} round {fmt(p['round'])} against {p['against']} round "
                        f"{fmt(p['against_round'])}, {p['n']} paired held-out prompts: prompt-level "
                        f"{points(p.get('csr_prompt'))}, instruction-level {points(p.get('csr_instruction'))} "
                        "points\n")
        for w in self.result["warnings"]:
            text.append(f" warning: {w}\n", style="bold yellow")
        text.rstrip()
        return text

    def on_mount(self) -> None:
        settings = self.query_one("#settings-table", DataTable)
        settings.add_columns("setting", *self.names)
        self._fill_settings()
        metrics = self.query_one("#metrics-table", DataTable)
        rounds = sorted({k for m in self.result["metrics"] for k in m["rounds"]})
        metrics.add_columns("metric", *[f"{n} r{k}" for n in self.names for k in rounds])
        for i, m in enumerate(self.result["metrics"]):
            metrics.add_row(m["label"], *[fmt(m["series"][n].get(k)) for n in self.names for k in rounds], key=str(i))
        if self.result["metrics"]:
            self._plot(0)
        answers = self.query_one("#answers-table", DataTable)
        answers.add_columns("disagreement", "prompt", *[f"{n} CSR" for n in self.names])
        for i, j in enumerate(self.result["answers"]):
            rates = [verifiers.share_met(a["checks"]) for a in j["answers"]]
            answers.add_row(fmt(j["disagreement"]), preview(j["prompt"], 60), *[fmt(r, 2) for r in rates], key=str(i))
        if self.result["answers"]:
            self._show_answers(0)

    def _fill_settings(self) -> None:
        table = self.query_one("#settings-table", DataTable)
        table.clear()
        for s in self.result["settings"]:
            if s["differs"] or not self.differences_only:
                style = "bold" if s["differs"] else "dim"
                table.add_row(Text(s["key"], style=style), *[Text(fmt(v), style=style) for v in s["values"]])

    def action_toggle_differences(self) -> None:
        self.differences_only = not self.differences_only
        self._fill_settings()
        self.notify("settings: " + ("differences only" if self.differences_only else "all"))

    def action_tab(self, name: str) -> None:
        self.query_one("#tabs", TabbedContent).active = name
        self.query_one(f"#{name}-table", DataTable).focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None:
            return
        if event.data_table.id == "metrics-table":
            self._plot(int(event.row_key.value))
        elif event.data_table.id == "answers-table":
            self._show_answers(int(event.row_key.value))

    def _plot(self, index: int) -> None:
        m = self.result["metrics"][index]
        self.query_one("#metrics-plot", RoundsPlot).set_data(m["label"], m["rounds"], m["series"])

    def _show_answers(self, index: int) -> None:
        """Each run's answer; words that differ from the first run's answer are highlighted."""
        j = self.result["answers"][index]
        first = j["answers"][0]["text"]
        for i, a in enumerate(j["answers"]):
            runs = word_diff(first, a["text"])[1] if i else word_diff(first, j["answers"][-1]["text"])[0]
            text = Text.assemble((f"{a['run']}\n", f"bold {SERIES_STYLES[i % 6]}"),
                                 (f"{a['tokens']} tokens · {a['finish_reason']}\n", "dim"))
            for cid, ok in a["checks"].items():
                text.append(f"{'✔' if ok else '✘'} {cid}  ", style="green" if ok else "red")
            if a["checks"]:
                text.append("\n")
            text.append_text(diff_text(runs, "black on yellow"))
            self.query_one(f"#answer-{i}", Static).update(text)
