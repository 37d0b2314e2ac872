"""Modal screens: a response in full, search, and the question asked when leaving a running loop."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

from selfalign.tui.feed import ResponseView, word_diff
from selfalign.tui.widgets import diff_text, fmt, preview


class ResponseScreen(ModalScreen):
    """The full prompt, response, every judge output and every constraint result of one response."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, detail: dict[str, Any]):
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        d = self.detail
        r, p = d["response"], d["prompt"]
        body = Text()
        body.append(f"response {r.id} · round {r.round} · {r.policy} · sample {r.sample_index} · {r.tokens} tokens"
                    f" · {r.finish_reason} · mean logprob {fmt(r.mean_logprob)}\n\n", style="dim")
        body.append("Prompt\n", style="bold underline")
        body.append(p.text + "\n")
        if p.constraints:
            body.append("constraints: " + ", ".join(c["id"] for c in p.constraints) + "\n", style="dim")
        source = d.get("source")
        if source is not None:  # a repaired copy or a correction: the answer it edits, differing words marked
            before, after = word_diff(source.text, r.text)
            body.append(f"\nOriginal answer (response {source.id})\n", style="bold underline")
            body.append_text(diff_text(before, "black on red"))
            body.append(f"\n\n{'Correction' if r.kind == 'correction' else 'Repaired copy'}\n", style="bold underline")
            body.append_text(diff_text(after, "black on green"))
            body.append("\n")
        else:
            body.append("\nResponse\n", style="bold underline")
            body.append((r.text or "(empty)") + "\n")
        if d["verifications"]:
            body.append("\nConstraints\n", style="bold underline")
            for v in d["verifications"]:
                body.append(f"{'✔' if v.passed else '✘'} {v.constraint_id}\n", style="green" if v.passed else "red")
        for j in d["judgements"]:
            body.append(f"\nJudge {j.judge} / {j.rubric} #{j.sample_index}: score {fmt(j.score)} "
                        f"({'parsed' if j.parsed_ok else 'NOT parsed'})\n",
                        style="bold underline" if j.parsed_ok else "bold red")
            if j.raw_output:
                body.append(j.raw_output + "\n", style="italic")
        with Vertical(id="dialog"):
            with VerticalScroll():
                yield Static(body, id="detail")
            yield Label("Esc closes", classes="hint")


class QuitScreen(ModalScreen[str]):
    """Leaving while the loop runs: leave it running (the default), stop it, or stay."""

    BINDINGS = [Binding("escape", "dismiss('cancel')", "Stay")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="small"):
            yield Label("The loop is still running. Leave it running in the background?")
            with Horizontal(classes="buttons"):
                yield Button("Leave running", id="leave", variant="primary")
                yield Button("Stop after this batch", id="stop", variant="warning")
                yield Button("Stay", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)


class SearchScreen(ModalScreen[int | None]):
    """Full-text search over every response of the run; Enter on a hit opens it."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, search):
        super().__init__()
        self.search = search  # callable(query) -> starts a worker that calls show()

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Input(placeholder="search responses (all words must match), Enter to search", id="query")
            table = DataTable(id="hits", cursor_type="row")
            table.add_columns("id", "round", "response", "prompt")
            yield table
            yield Label("Enter: search / open · Esc closes", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.search(event.value)

    def show(self, hits: list[ResponseView]) -> None:
        table = self.query_one("#hits", DataTable)
        table.clear()
        for h in hits:
            table.add_row(h.id, h.round, preview(h.text, 50), preview(h.prompt, 40), key=str(h.id))
        if hits:
            table.focus()
        else:
            self.notify("no response matches", severity="warning")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(int(event.row_key.value))
