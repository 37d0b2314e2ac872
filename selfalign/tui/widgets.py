"""Renderables and small widgets: the header, the stage pipeline, line plots, sparklines, word diffs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static

from selfalign import metrics as metrics_mod
from selfalign.stages import STAGES
from selfalign.tui.feed import smooth

STATE_STYLE = {"running": "bold green", "paused": "bold yellow", "stopping": "bold yellow", "done": "bold cyan",
               "failed": "bold red", "stale": "bold red", "hung": "bold red", "idle": "dim", "stopped": "yellow"}
SPARK = "▁▂▃▄▅▆▇█"


def tab_bindings(names: list[str]) -> list[Binding]:
    """Keys 1..n switch to the named tabs (hidden from the footer; the tab bar shows them)."""
    return [Binding(str(i + 1), f"tab('{name}')", name.title(), show=False) for i, name in enumerate(names)]


def parse_ts(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts) if ts else None


def clock(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def header_text(state: dict[str, Any], now: datetime, pending: str | None) -> Text:
    """One line: run, model, recipe, round k of N, state and time in the round."""
    shown = "stopping" if pending in ("stop", "stop_after_stage") and state["state"] == "running" else state["state"]
    started = parse_ts(state.get("round_started_at"))
    text = Text()
    text.append(f" {state['run']} ", style="bold reverse")
    text.append(f"  {state['model']} · {state['recipe']} · ")
    text.append(f"round {fmt(state['round'])} of {state['rounds']}", style="bold")
    text.append("  ")
    text.append(shown, style=STATE_STYLE.get(shown, ""))
    if state.get("pid"):
        text.append(f" (pid {state['pid']})", style="dim")
    if started and state["state"] in ("running", "paused"):
        text.append(f"  {clock((now - started).total_seconds())} in round", style="dim")
    return text


def pipeline_table(stages: list, now: datetime, width: int = 24, live: bool = True) -> Table:
    """One row per stage of the current round: bar, count, time and ETA (elapsed and ETA only while a loop
    is `live`: a stage left running by a dead process has no meaningful ETA); a finished stage also
    shows its peak memory where it was measured."""
    by_name = {s.name: s for s in stages}
    table = Table.grid(padding=(0, 1))
    for column in ("name", "bar", "count", "status", "time"):
        table.add_column(column, no_wrap=True)
    for name in STAGES:
        s = by_name.get(name)
        if s is None:
            table.add_row(Text(name, style="dim"), ProgressBar(total=1, completed=0, width=width),
                          Text("", style="dim"), Text("waiting", style="dim"), "")
            continue
        total = s.total if s.total else None
        done_fraction = 1.0 if s.status == "done" else (s.done / total if total else 0.0)
        bar = ProgressBar(total=1.0, completed=done_fraction, width=width,
                          pulse=s.status == "running" and not total)
        started = parse_ts(s.started_at)
        if s.status == "running" and started and live:
            elapsed = (now - started).total_seconds()
            eta = elapsed * (total - s.done) / s.done if total and s.done else None
            timing = f"{clock(elapsed)}  ETA {clock(eta)}"
        else:
            timing = clock(s.seconds) if s.seconds is not None else ""
            if s.status == "done" and s.peak_rss_mib:  # what the stage held at most
                timing += f"  {s.peak_rss_mib / 1024:.1f} GiB"
        status = s.status if s.status != "running" or live else "interrupted"  # its process is gone
        style = {"done": "cyan", "running": "bold green", "failed": "bold red", "stopped": "yellow",
                 "interrupted": "bold red"}.get(status, "")
        count = f"{s.done}/{total}" if total else (str(s.done) if s.done else "")
        table.add_row(Text(name, style=style), bar, count, Text(status, style=style), timing)
    return table


def sparkline(values: list) -> str:
    """Numbers as bar heights; a gap where a round has none (or a word such as 'undecided')."""
    values = [v if isinstance(v, (int, float)) else None for v in values]
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))]
                   for v in values)


def diff_text(runs: list[tuple[str, bool]], style: str) -> Text:
    text = Text()
    for chunk, differs in runs:
        text.append(chunk, style=style if differs else "")
    return text


class LinePlot(Static):
    """A line plot of one series in text cells: raw values as dots, the smoothed curve as a solid line."""

    def __init__(self, title: str, **kwargs):
        super().__init__(**kwargs)
        self.title = title
        self.values: list[float] = []

    def set_values(self, values: list[float]) -> None:
        self.values = values
        self.refresh()

    def render(self) -> Text:
        width = max(10, self.size.width - 10)
        height = max(3, self.size.height - 1)
        values = self.values
        head = Text(f"{self.title}  ", style="bold")
        if not values:
            return head + Text("no steps yet", style="dim")
        smoothed = smooth(values)
        head.append(f"last {values[-1]:.4g}  smoothed {smoothed[-1]:.4g}  steps {len(values)}", style="dim")
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        grid = [[" "] * width for _ in range(height)]
        styles = [[""] * width for _ in range(height)]

        def cell(series: list[float], mark: str, style: str) -> None:
            for col in range(width):  # each column shows the mean of the steps that fall in it
                a = col * len(series) // width
                b = max(a + 1, (col + 1) * len(series) // width)
                if a >= len(series):
                    break
                chunk = series[a:b]
                row = height - 1 - int((sum(chunk) / len(chunk) - lo) / span * (height - 1) + 0.5)
                grid[row][col], styles[row][col] = mark, style

        cell(values, "·", "dim")
        cell(smoothed, "━", "bold cyan")
        body = Text()
        for r in range(height):
            label = hi - (hi - lo) * r / (height - 1)
            body.append(f"{label:>8.3g} │", style="dim")
            for c in range(width):
                body.append(grid[r][c], style=styles[r][c])
            body.append("\n")
        body.rstrip()
        return Text("\n").join([head, body])


def rounds_table(metrics: dict[int, dict[str, float | None]], names: list[tuple[str, str]]) -> Table:
    """Metrics per round as a table, each row with its sparkline across rounds."""
    rounds = sorted(metrics)
    table = Table(expand=False, box=None, padding=(0, 1), header_style="bold")
    table.add_column("metric")
    table.add_column("trend")
    for k in rounds:
        table.add_column(f"r{k}", justify="right")
    for key, label in names:
        values = [metrics[k].get(key) for k in rounds]
        if all(v is None for v in values):
            continue
        table.add_row(label, Text(sparkline(values), style="cyan"), *[fmt(v) for v in values])
    return table


def health_lines(metrics: dict[int, dict[str, float | None]]) -> Group:
    """Judge health per round with warnings in colour (the thresholds the judge stage warns at), and the
    forms a round's held-out answers wear unasked far more often than round 0's (habits the loop taught)."""
    lines = []
    for k in sorted(metrics):
        m = metrics[k]
        if not any(name.startswith(("judge/", metrics_mod.UNASKED_PREFIX)) for name in m):
            continue
        warnings = [(f"habit: {form} unasked {now:.0%} (round 0 {then:.0%})", "bold magenta")
                    for form, now, then in metrics_mod.habits(metrics, k)]
        if hollow := metrics_mod.gaming_rise(metrics, k, "eval/hollow_rate"):
            warnings.append((f"hollow answers {hollow[0]:.0%} (round 0 {hollow[1]:.0%})", "bold magenta"))
        if echo := metrics_mod.gaming_rise(metrics, k, "eval/echo_rate"):
            warnings.append((f"echoes {echo[0]:.0%} (round 0 {echo[1]:.0%})", "bold magenta"))
        if m.get("judge/collapse"):
            warnings.append(("score collapse", "bold red"))
        if metrics_mod.position_biased(m):
            warnings.append((f"position bias {m['judge/position_bias']:.2f}", "bold red"))
        if metrics_mod.parse_failing(m):
            warnings.append((f"parse failures {m['judge/parse_fail_rate']:.0%}", "bold yellow"))
        if m.get("judge/hacking_rate"):
            warnings.append((f"hacking flags {m['judge/hacking_rate']:.0%}", "bold magenta"))
        if metrics_mod.disagrees(m, "judge/likelihood_verifier_agreement"):
            warnings.append((f"likelihood/verifier agreement {m['judge/likelihood_verifier_agreement']:.2f}",
                             "yellow"))
        line = Text(f"round {k}: ")
        if not warnings:
            line.append("healthy", style="green")
        for i, (message, style) in enumerate(warnings):
            line.append(("; " if i else "") + message, style=style)
        lines.append(line)
    return Group(*lines) if lines else Group(Text("no judge health yet", style="dim"))


SERIES_STYLES = ["bold cyan", "bold magenta", "bold yellow", "bold green", "bold red", "bold blue"]
SERIES_MARKS = "●◆▲■✚★"


class RoundsPlot(Static):
    """Several runs' values of one metric over a shared round axis, overlaid; a legend names the runs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.title = ""
        self.rounds: list[int] = []
        self.series: dict[str, dict[int, float | None]] = {}

    def set_data(self, title: str, rounds: list[int], series: dict[str, dict[int, float | None]]) -> None:
        self.title, self.rounds, self.series = title, rounds, series
        self.refresh()

    def render(self) -> Text:
        head = Text(f"{self.title}  ", style="bold")
        for i, name in enumerate(self.series):
            head.append(f"{SERIES_MARKS[i % 6]} {name}  ", style=SERIES_STYLES[i % 6])
        numeric = {name: {k: v if isinstance(v, (int, float)) else None for k, v in s.items()}
                   for name, s in self.series.items()}  # a word ('undecided') is no point on the plot
        values = [v for s in numeric.values() for v in s.values() if v is not None]
        if not values or not self.rounds:
            return head + Text("\nno values", style="dim")
        width = max(10, self.size.width - 12)
        height = max(3, self.size.height - 2)
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        step = width / max(1, len(self.rounds) - 1) if len(self.rounds) > 1 else 0
        grid = [[(" ", "")] * width for _ in range(height)]
        for i, series in enumerate(numeric.values()):
            points = [(int(j * step), series.get(k)) for j, k in enumerate(self.rounds)]
            known = [(x, v) for x, v in points if v is not None]
            for (x0, v0), (x1, v1) in zip(known, known[1:], strict=False):  # joining lines, dotted
                for x in range(x0 + 1, x1):
                    v = v0 + (v1 - v0) * (x - x0) / (x1 - x0)
                    row = height - 1 - int((v - lo) / span * (height - 1) + 0.5)
                    if grid[row][min(x, width - 1)][0] == " ":
                        grid[row][min(x, width - 1)] = ("·", SERIES_STYLES[i % 6])
            for x, v in known:
                row = height - 1 - int((v - lo) / span * (height - 1) + 0.5)
                grid[row][min(x, width - 1)] = (SERIES_MARKS[i % 6], SERIES_STYLES[i % 6])
        body = Text()
        for r in range(height):
            label = hi - (hi - lo) * r / (height - 1)
            body.append(f"{label:>9.3g} │", style="dim")
            for char, style in grid[r]:
                body.append(char, style=style)
            body.append("\n")
        axis = [" "] * width
        for j, k in enumerate(self.rounds):
            for n, ch in enumerate(f"r{k}"):
                if int(j * step) + n < width:
                    axis[int(j * step) + n] = ch
        body.append(" " * 10 + "└" + "".join(axis), style="dim")
        return Text("\n").join([head, body])


DECISION_STYLE = {"reject": "bold red", "promote": "green", "curriculum": "cyan", "judge": "yellow",
                  "stop": "bold magenta"}


def decisions_text(decisions: list, overrides: dict[int, str]) -> Text:
    """The controller's decisions per round with their reasons; the user's overrides beside them."""
    text = Text()
    if not decisions:
        return Text("no controller decisions yet (they come after each round's evaluation)", style="dim")
    text.append("Controller decisions\n", style="bold underline")
    for d in decisions:
        label = "REJECTED" if d.kind == "reject" else d.kind
        text.append(f"round {d.round}: {label}", style=DECISION_STYLE.get(d.kind, ""))
        if d.kind == "reject" and overrides.get(d.round) == "promote":
            text.append(" (promoted by you)", style="bold green")
        text.append(f"  {d.reason}\n")
    text.rstrip()
    return text
