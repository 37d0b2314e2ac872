"""Key-response latency of the run screen on a large run, while a writer keeps adding rows.

A run database with 100,000 responses (each judged by rubric and likelihood, constrained ones
verified) is built once; a thread then writes new responses and judgements the whole time, as a
loop would. The UI (polling every 0.5 s) gets keys: tab switches, cursor moves in the tables,
opening and closing search. Each key is timed from sending it until the first frame the compositor
produces after the key took effect (Pilot's own `press` waits for the whole process to go idle,
writer thread included, so it measures the benchmark rather than the UI). Baseline: the same keys on
a run with 100 responses, in the same process. Target: every key answered within 100 ms on the large run.

Run: .venv/bin/python benchmarks/tui_latency.py [--responses 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from textual import events
from textual.widgets import DataTable, TabbedContent

from selfalign import config, runs
from selfalign.store import open_store
from selfalign.store.rows import NewJudgement, NewPair, NewPrompt, NewResponse, TrainStep
from selfalign.tui.app import RunApp
from selfalign.tui.screens import SearchScreen

TIMEOUT_S = 10
WORDS = ["the", "model", "writes", "short", "answers", "about", "rivers", "cities", "numbers", "lists", "poems",
         "code", "plans"]


def fill(folder: runs.RunFolder, n: int, start_round: int = 1) -> None:
    samples = 4
    with open_store(folder.db_path) as store:
        store.start_round(start_round, None)
        with store.transaction():
            prompts = store.add_prompts([NewPrompt(f"Prompt {i}: write about {WORDS[i % len(WORDS)]}.", "self",
                                                   constraints=[{"id": "lowercase"}] if i % 2 else [],
                                                   round=start_round) for i in range(n // samples)])
            for i, pid in enumerate(prompts):
                ids = []
                for s in range(samples):
                    text = " ".join(WORDS[(i + s + j) % len(WORDS)] for j in range(30))
                    rid = store.add_response(NewResponse(pid, start_round, "base", s, text, 30, "stop", -1.0 - s))
                    store.add_judgement(NewJudgement(rid, "self", "additive5", float(s), True, f"Score: {s}"))
                    store.add_judgement(NewJudgement(rid, "likelihood", "mean_logprob", -1.0 - s, True))
                    if i % 2:
                        store.add_verifications(rid, {"lowercase": s % 2 == 0})
                    ids.append(rid)
                store.add_pair(NewPair(start_round, pid, ids[0], ids[-1], 0.5, "best-vs-worst"))
            for step in range(200):
                store.add_train_step(TrainStep(start_round, step, 0.7 - step / 400, reward_margin=step / 200))


def writer(folder: runs.RunFolder, stop: threading.Event, written: list[int]) -> None:
    """A loop's write pattern: one response and its judgements at a time, a few per second."""
    with open_store(folder.db_path) as store:
        store.start_round(2, None)
        store.start_stage(2, "generate", total=10_000)
        i = 0
        while not stop.is_set():
            if i % 4 == 0:  # four samples per prompt
                (pid,) = store.add_prompts([NewPrompt(f"A live prompt {i}.", "self", round=2)])
            rid = store.add_response(NewResponse(pid, 2, "base", i % 4, f"live answer {i} " * 5, 10, "stop",
                                                 -1.0 - i % 4))
            store.add_judgement(NewJudgement(rid, "likelihood", "mean_logprob", -1.0, True))
            store.stage_progress(2, "generate", i + 1)
            i += 1
            written[0] = i
            time.sleep(0.02)


def key_checks(app: RunApp):
    """(key, condition that says the key was handled): tab switches, cursor moves, search open and close."""
    tabs = app.query_one("#tabs", TabbedContent)

    def tab(name):
        return lambda: tabs.active == name

    def cursor_moved(table_id, before):
        table = app.query_one(table_id, DataTable)
        return lambda: table.cursor_row != before()

    def row(table_id):
        return lambda: app.query_one(table_id, DataTable).cursor_row

    checks = []
    for _ in range(3):
        checks += [("2", tab("judgements")), ("down", None), ("down", None), ("3", tab("pairs")), ("down", None),
                   ("4", tab("training")), ("5", tab("rounds")), ("6", tab("log")), ("1", tab("live")),
                   ("down", None), ("up", None), ("slash", lambda: isinstance(app.screen, SearchScreen)),
                   ("escape", lambda: not isinstance(app.screen, SearchScreen))]
    return checks, row, cursor_moved


async def measure(folder: runs.RunFolder) -> list[float]:
    """Time from sending a key to the first screen update after the key's effect is visible in the app."""
    app = RunApp(folder)
    displays: list[float] = []
    original = app._display

    def spy(screen, renderable):  # every frame the compositor produces passes through here
        if renderable is not None:
            displays.append(time.perf_counter())
        return original(screen, renderable)

    app._display = spy
    latencies = []
    by_key: dict[str, list[int]] = {}
    async with app.run_test(size=(160, 50)) as pilot:
        while app.polls < 2:
            await pilot.pause(0.05)
        checks, row, cursor_moved = key_checks(app)
        for key, done in checks:
            if done is None:  # a cursor key moves the cursor of the focused table
                table_id = "#" + app.focused.id
                before = app.query_one(table_id, DataTable).cursor_row
                done = cursor_moved(table_id, lambda before=before: before)
            start = time.perf_counter()
            app._driver.send_message(events.Key(key, None))
            while not done():
                await asyncio.sleep(0.0005)
                if time.perf_counter() - start > TIMEOUT_S:
                    raise SystemExit(f"key {key!r} had no effect within {TIMEOUT_S} s")
            handled = time.perf_counter()
            while not displays or displays[-1] < handled:
                await asyncio.sleep(0.0005)
            latencies.append(displays[-1] - start)
            by_key.setdefault(key, []).append(round((displays[-1] - start) * 1000))
            await pilot.pause(0.15)  # let polls land between keys, as they do for a person typing
    print("  ms per key:", ", ".join(f"{k} {v}" for k, v in by_key.items()))
    return latencies


def run_case(n: int, label: str) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = runs.create("bench", config.dumps(config.build()), root=Path(tmp))
        start = time.perf_counter()
        fill(folder, n)
        built = time.perf_counter() - start
        stop, written = threading.Event(), [0]
        thread = threading.Thread(target=writer, args=(folder, stop, written), daemon=True)
        thread.start()
        try:
            latencies = asyncio.run(measure(folder))
        finally:
            stop.set()
            thread.join()
        ms = sorted(x * 1000 for x in latencies)
        print(f"{label:<22} {n:>7} responses (built in {built:5.1f} s), {written[0]} written live: "
              f"median {statistics.median(ms):6.1f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:6.1f} ms, "
              f"max {ms[-1]:6.1f} ms over {len(ms)} keys")
        return ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=100_000)
    args = parser.parse_args()
    small = run_case(100, "baseline (small run)")
    large = run_case(args.responses, "large run")
    ratio = statistics.median(large) / statistics.median(small)
    print(f"median ratio large/small: {ratio:.2f}x; target max < 100 ms on the large run: "
          f"{'met' if large[-1] < 100 else 'MISSED'}")


if __name__ == "__main__":
    main()
