"""`selfalign status` on idle, running, paused, hung, stale, failed and finished runs."""

import json
import subprocess
import sys

from click.testing import CliRunner

from selfalign import config, runs
from selfalign.cli import cli
from selfalign.status import render, run_status
from selfalign.store import open_store

HOLD = ("import sys, time; from selfalign import runs; runs.locate(sys.argv[1]).lock().acquire(); "
        "print('locked', flush=True); time.sleep(60)")


def make(name, rounds=2):
    return runs.create(name, config.dumps(config.build(sets=[f"run.rounds={rounds}"])))


def test_states(runs_root):
    idle = make("idle")
    assert run_status(idle)["state"] == "idle" and run_status(idle)["round"] is None

    failed = make("failed")
    with open_store(failed.db_path) as store:
        store.start_round(1, None)
        store.start_stage(1, "instruct")
        store.finish_stage(1, "instruct", "failed", error="ConfigError: seeds missing")
    s = run_status(failed)
    assert (s["state"], s["stage"], s["error"]) == ("failed", "instruct", "ConfigError: seeds missing")

    stale = make("stale")
    with open_store(stale.db_path) as store:
        store.start_round(1, None)
        store.start_stage(1, "generate", total=10)
        store.stage_progress(1, "generate", 4)
        store.log_event("info", "started", round=1, stage="generate")
    s = run_status(stale)
    assert (s["state"], s["progress"], s["pid"]) == ("stale", [4, 10], None) and s["last_activity"]

    proc = subprocess.Popen([sys.executable, "-c", HOLD, "stale"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        s = run_status(stale)
        assert (s["state"], s["pid"]) == ("running", proc.pid)
        with open_store(stale.db_path) as store:
            cid = store.request_control("pause")
            store.mark_control_handled(cid)
        assert run_status(stale)["state"] == "paused"
        with open_store(stale.db_path) as store:  # the holder stopped beating long ago
            store.db.execute("INSERT OR REPLACE INTO heartbeat (id, pid, ts) VALUES (1, ?, ?)",
                             [proc.pid, "2026-01-01T00:00:00.000+00:00"])
            store.db.commit()
        assert run_status(stale)["state"] == "hung"
        with open_store(stale.db_path) as store:
            store.beat(proc.pid)
        assert run_status(stale)["state"] == "paused"
    finally:
        proc.kill()
        proc.wait()

    done = make("done", rounds=1)
    with open_store(done.db_path) as store:
        store.start_round(1, None)
        store.finish_round(1)
        store.set_metric(1, "eval/csr_prompt", 0.25)
    s = run_status(done)
    assert s["state"] == "done" and s["metrics"] == {"eval/csr_prompt": 0.25}
    text = render([s])
    assert "done: done; round 1 of 1" in text and "eval/csr_prompt 0.25" in text


def test_status_command_lists_every_run_as_json(runs_root):
    make("a")
    make("b")
    result = CliRunner().invoke(cli, ["status", "--format", "json"])
    assert result.exit_code == 0
    assert [s["run"] for s in json.loads(result.output)] == ["a", "b"]
    missing = CliRunner().invoke(cli, ["status", "ghost"])
    assert missing.exit_code == 1 and "no run named 'ghost'" in missing.output


def test_an_undecided_win_rate_reads_undecided_in_status_compare_and_the_ui(runs_root):
    """The base-model judge of a small policy names one position every time: status, compare and the Rounds
    tab say 'undecided' instead of the 0.5 that habit produces; a decided win rate shows as a number."""
    import asyncio
    import shutil

    import fixed_run
    from test_tui import text_of

    from selfalign import compare, status
    from selfalign.store import open_store
    from selfalign.tui.app import RunApp

    folder = fixed_run.build(runs_root)
    other = runs.RunFolder(runs_root / "decided")
    shutil.copytree(folder.path, other.path)
    for run, (rate, decided) in ((folder, (0.5, 0.1)), (other, (0.62, 0.8))):
        with open_store(run.db_path) as store:
            store.finish_stage(1, "train")
            store.finish_round(1)
            store.set_metric(1, "eval/win_rate", rate)
            store.set_metric(1, "eval/win_rate_decided", decided)

    text = status.render([status.run_status(folder), status.run_status(other)])
    assert "eval/win_rate undecided" in text and "eval/win_rate 0.62" in text
    assert status.run_status(folder)["metrics"]["eval/win_rate"] == "undecided"
    md = compare.to_markdown(compare.compare([folder, other]))
    win_table = md.split("(`eval/win_rate`)")[1].split("**")[0]
    assert "| 1 | undecided | 0.62 |" in win_table

    async def rounds_tab():
        app = RunApp(folder, poll_interval=0.1)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.polls < 1:
                await pilot.pause(0.05)
            await pilot.press("5")
            shown = text_of(app, "#rounds-table")
            await pilot.press("q")
        return shown

    shown = asyncio.run(rounds_tab())
    assert "undecided" in shown and "win rate vs r0" in shown
