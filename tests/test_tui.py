"""The terminal UI driven with Pilot: a finished tiny-model run, a run that grows while the test watches
(a real loop process, paused and resumed from the UI), and the pieces the screens are built from."""

import asyncio
import io
import time

import pytest
from rich.console import Console
from rich.text import Text
from test_loop import LOOP_SETS
from textual.widgets import DataTable, Input, Static

from selfalign import config, loop, runs
from selfalign.errors import EXIT_STOPPED
from selfalign.store import open_store
from selfalign.tui import launch
from selfalign.tui.app import RunApp
from selfalign.tui.feed import Feed, ResponseView, matches, smooth, word_diff
from selfalign.tui.screens import QuitScreen, ResponseScreen, SearchScreen


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    """One real round of the default recipe on the tiny model, run once for the module."""
    root = tmp_path_factory.mktemp("tui-runs")
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *LOOP_SETS, "run.rounds=1",
                             "instruct.prompts_per_round=4"])
    folder = runs.create("finished", config.dumps(cfg), root=root)
    assert loop.run(folder, quiet=True) == 0
    return folder


async def until(pilot, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the screen never reached the expected state"
        await pilot.pause(0.05)


def text_of(app, selector) -> str:
    """What a Static shows, as plain text (tables and other renderables rendered the way a terminal would)."""
    content = app.query_one(selector, Static).content
    if isinstance(content, str | Text):
        return str(content)
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(content)
    return console.export_text()


def test_finished_run_fills_every_tab(finished_run):
    with open_store(finished_run.db_path) as store:
        responses = store.count_responses()
        pairs = store.pairs(1)
        steps = store.train_steps(1)
        judged = [j for j in store.judgements(round=1) if j.judge == "self" and not j.rubric.startswith("pairwise")]
    assert pairs and steps and judged

    async def scenario():
        app = RunApp(finished_run, poll_interval=0.1)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.polls >= 1)
            assert "done" in text_of(app, "#header") and "round 1 of 1" in text_of(app, "#header")
            live = app.query_one("#live-table", DataTable)
            table = app.query_one("#judgement-table", DataTable)
            assert live.row_count == min(responses, 300) and table.row_count == responses
            newest = [live.get_row_at(i)[0] for i in range(3)]
            assert newest == sorted(newest, reverse=True)  # newest first
            # every judged response shows its parse status in the judgements table
            statuses = {table.get_row(str(j.response_id))[-1] for j in judged}
            assert statuses <= {"ok", "fail"} and statuses

            await pilot.press("2")
            await pilot.click("#filter")
            await pilot.press(*"round:0")
            await until(pilot, lambda: 0 < table.row_count < responses)
            assert all(table.get_row_at(i)[1] == 0 for i in range(table.row_count))
            await pilot.press("enter")  # leaves the filter box: the number keys switch tabs again
            assert app.focused is table
            app.query_one("#filter", Input).value = ""
            await until(pilot, lambda: table.row_count == responses)

            await pilot.press("3")
            pair_table = app.query_one("#pair-table", DataTable)
            assert pair_table.row_count == len(pairs)
            assert "CHOSEN" in text_of(app, "#chosen") and f"pair {pairs[0].id}" in text_of(app, "#pair-info")

            await pilot.press("4")
            assert f"step {steps[-1].step}" in text_of(app, "#train-info")

            await pilot.press("5")
            assert "CSR (instruction)" in text_of(app, "#rounds-table") and " r1" in text_of(app, "#rounds-table")

            # Enter on a judgements row opens the full response with its judge outputs
            await pilot.press("2")
            assert table.row_count == responses, (app.focused, app.query_one("#filter", Input).value)
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ResponseScreen))
            detail = str(app.screen.query_one("#detail", Static).content)
            assert "Prompt" in detail and "Response" in detail
            await pilot.press("escape")

            # nothing runs: pause is refused rather than left for some later loop to trip on
            await pilot.press("p")
            assert app.pending is None
            with open_store(finished_run.db_path) as store:
                assert store.pending_controls() == []

            await pilot.press("q")  # no loop running: closes without asking
        return app.return_value

    assert asyncio.run(scenario()) == "closed"


def test_search_finds_a_response_and_opens_it(finished_run):
    with open_store(finished_run.db_path) as store:
        target = next(r for r in store.responses() if len(r.text.split()) >= 2)
    word = max(target.text.split(), key=len)

    async def scenario():
        app = RunApp(finished_run, poll_interval=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.polls >= 1)
            await pilot.press("slash")
            await until(pilot, lambda: isinstance(app.screen, SearchScreen))
            app.screen.query_one("#query", Input).value = word
            await pilot.press("enter")
            hits = app.screen.query_one("#hits", DataTable)
            await until(pilot, lambda: hits.row_count > 0)
            keys = [hits.get_row_at(i)[0] for i in range(hits.row_count)]
            assert target.id in keys
            hits.move_cursor(row=keys.index(target.id))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ResponseScreen))
            assert app.screen.detail["response"].id == target.id

    asyncio.run(scenario())


def start_watched_loop(tiny_model_dir, name):
    """A run long enough to watch (six rounds) and its loop started the way `selfalign run` starts it."""
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *LOOP_SETS, "run.rounds=6"])
    folder = runs.create(name, config.dumps(cfg))
    child, output = launch.start_loop(folder, None)
    return folder, child, output


def test_watching_a_growing_run_pause_resume_and_stop(tiny_model_dir, runs_root):
    """A loop process writes while the UI watches: rows appear, the pipeline moves, a pause is written,
    acknowledged and shown; resume; leaving with 'stop' ends the loop with its stopped exit code."""
    folder, child, output = start_watched_loop(tiny_model_dir, "growing")
    try:
        async def scenario():
            app = RunApp(folder, child=child, child_output=output, poll_interval=0.1)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.state and app.state["pid"] == child.pid, timeout=60)
                await pilot.press("p")
                await until(pilot, lambda: app.pending is not None)
                assert "waiting for the loop" in text_of(app, "#controls") or app.pending["handled"]
                await until(pilot, lambda: app.pending["handled"], timeout=60)
                assert "acknowledged" in text_of(app, "#controls")
                await until(pilot, lambda: "paused" in text_of(app, "#header"))
                with open_store(folder.db_path) as store:
                    paused_at = store.count_responses()
                await pilot.pause(1.0)
                with open_store(folder.db_path) as store:
                    assert store.count_responses() == paused_at  # paused means nothing new is written

                await pilot.press("r")
                await until(pilot, lambda: app.pending["action"] == "resume" and app.pending["handled"], timeout=60)
                live = app.query_one("#live-table", DataTable)
                await until(pilot, lambda: live.row_count > paused_at, timeout=120)
                assert "running" in text_of(app, "#header")
                await until(pilot, lambda: any(s.done or s.status == "done" for s in app.snapshot.stages))
                assert "done" in text_of(app, "#pipeline") or "/" in text_of(app, "#pipeline")  # progress moved

                await pilot.press("q")
                await until(pilot, lambda: isinstance(app.screen, QuitScreen))
                await pilot.click("#stop")
            return app.return_value

        assert asyncio.run(scenario()) == "stop"
        assert child.wait(timeout=120) == EXIT_STOPPED
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with open_store(folder.db_path) as store:
        actions = [c.action for c in store.controls()]
        assert actions == ["pause", "resume", "stop"] and all(c.handled for c in store.controls())


def test_leaving_a_running_loop_leaves_it_running(tiny_model_dir, runs_root):
    folder, child, output = start_watched_loop(tiny_model_dir, "leave")
    try:
        async def scenario():
            app = RunApp(folder, child=child, child_output=output, poll_interval=0.1)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.state and app.state["pid"] == child.pid, timeout=60)
                await pilot.press("q")
                await until(pilot, lambda: isinstance(app.screen, QuitScreen))
                await pilot.press("enter")  # the default button: leave it running
            return app.return_value

        assert asyncio.run(scenario()) == "left running"
        time.sleep(0.5)
        assert child.poll() is None and runs.holder_pid(folder) == child.pid
        with open_store(folder.db_path) as store:
            assert store.controls() == []
    finally:
        child.terminate()  # SIGTERM: the loop stops cleanly at its next batch
        assert child.wait(timeout=120) in (0, EXIT_STOPPED)


def test_feed_reads_only_new_rows(finished_run):
    with Feed(finished_run) as feed:
        first = feed.poll()
        assert first.responses and first.events and first.train_steps
        again = feed.poll()
        assert again.responses == [] and again.events == [] and again.train_steps == [] and again.pairs == []
        assert again.state["state"] == "done"


def test_word_diff_marks_only_changed_words():
    left, right = word_diff("the cat sat on the mat", "the dog sat on a mat")
    assert [w for w, differs in left if differs] == ["cat ", "the "]
    assert [w for w, differs in right if differs] == ["dog ", "a "]
    assert "".join(w for w, _ in left) == "the cat sat on the mat"


def test_smooth_starts_at_the_first_value_and_lags():
    values = [1.0, 0.0, 0.0, 0.0]
    out = smooth(values, 0.5)
    assert out[0] == 1.0 and out[1] > 0.0 and out[-1] < out[1]


def test_filter_tokens():
    view = ResponseView(1, 2, 1, "Write a haiku", [], "base", 0, "Leaves fall softly", 3, "stop", -1.0,
                        rubric_parsed=False, checks={"lowercase": False})
    assert matches(view, "haiku leaves") and matches(view, "round:2 parse:fail unmet")
    assert not matches(view, "round:1") and not matches(view, "parse:ok") and not matches(view, "sonnet")


def test_the_pipeline_shows_a_finished_stages_peak_memory():
    from datetime import datetime, timezone

    from selfalign.store.rows import Stage
    from selfalign.tui.widgets import pipeline_table

    stages = [Stage(1, 1, "instruct", "done", 3, 3, None, "2026-12-04T03:00:00+00:00", "2026-12-04T03:01:00+00:00",
                    60.0, peak_rss_mib=3276.8),
              Stage(2, 1, "generate", "done", 12, 12, None, "2026-12-04T03:01:00+00:00", "2026-12-04T03:02:00+00:00",
                    60.0)]
    console = Console(file=io.StringIO(), width=120)
    console.print(pipeline_table(stages, datetime.now(timezone.utc)))
    lines = console.file.getvalue().splitlines()
    assert "3.2 GiB" in next(line for line in lines if "instruct" in line)
    assert "GiB" not in next(line for line in lines if "generate" in line)  # not measured: nothing shown
