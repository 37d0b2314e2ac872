"""Snapshots of the main screens at fixed sizes, on a run with fixed content and a fixed clock.

After an intended change of the screens: `pytest tests/test_tui_snapshots.py --snapshot-update`, then
look at the SVGs under tests/__snapshots__/ before committing them."""

from datetime import datetime, timedelta

import pytest
from fixed_run import FIXED_TS, build

from selfalign.tui.app import RunApp

CLOCK = datetime.fromisoformat(FIXED_TS) + timedelta(minutes=5)


@pytest.fixture
def fixed_app(runs_root):
    folder = build(runs_root)
    return RunApp(folder, poll_interval=3600, clock=lambda: CLOCK)  # one poll at start, none while shooting


async def first_poll(pilot):
    while pilot.app.polls < 1:
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.mark.parametrize("tab", ["1", "3", "4", "5"])
def test_screens_100x32(snap_compare, fixed_app, tab):
    async def run_before(pilot):
        await first_poll(pilot)
        await pilot.press(tab)
        await pilot.pause()

    assert snap_compare(fixed_app, terminal_size=(100, 32), run_before=run_before)


def test_live_at_80x24(snap_compare, fixed_app):
    assert snap_compare(fixed_app, terminal_size=(80, 24), run_before=first_poll)
