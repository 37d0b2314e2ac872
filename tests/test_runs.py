"""Run folders: names, atomic creation, replacement, and the OS writer lock across processes."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from selfalign import runs
from selfalign.errors import RunBusyError, StoreError, UsageError
from selfalign.store import open_store

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from selfalign import runs
    lock = runs.RunFolder(runs.runs_dir() / sys.argv[1]).lock().acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(runs_root):
    """Start a second process that holds a run's lock; yields its Popen."""
    procs = []

    def start(name):
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, name], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("name", ["demo", "run-1", "a.b_c", "X" * 64])
def test_good_names(name):
    assert runs.check_name(name) == name


@pytest.mark.parametrize("name", ["../x", "/abs/path", ".hidden", "a/b", "", "x" * 65, "a..b", "sp ace", "-x"])
def test_names_that_would_escape_or_hide(name):
    with pytest.raises(UsageError, match="is not allowed"):
        runs.check_name(name)


def test_create_makes_the_folder_layout(runs_root):
    folder = runs.create("demo", "[run]\n", note="why", version="0.1.0")
    assert folder.path == runs_root / "demo"
    assert folder.config_path.read_text() == "[run]\n"
    assert (folder.path / "rounds").is_dir() and folder.logs_dir.is_dir()
    with open_store(folder.db_path) as store:
        assert (store.run_info().name, store.run_info().note) == ("demo", "why")
    assert [p.name for p in runs_root.iterdir()] == ["demo"]  # no staging folder left behind
    assert runs.list_runs() == [folder]


def test_existing_run_is_refused_then_replaced_with_force(runs_root):
    folder = runs.create("demo", "old = 1\n")
    (folder.path / "rounds" / "marker").write_text("keep me")
    with pytest.raises(UsageError, match="already exists .* --force"):
        runs.create("demo", "new = 1\n")
    assert folder.config_path.read_text() == "old = 1\n"
    runs.create("demo", "new = 1\n", force=True)
    assert folder.config_path.read_text() == "new = 1\n"
    assert not (folder.path / "rounds" / "marker").exists()
    assert sorted(p.name for p in runs_root.iterdir()) == ["demo"]


def test_locate_errors(runs_root):
    with pytest.raises(StoreError, match="no run named 'ghost'"):
        runs.locate("ghost")
    (runs_root / "empty").mkdir(parents=True)
    with pytest.raises(StoreError, match="is not a selfalign run"):
        runs.locate("empty")


def test_second_writer_in_another_process_is_refused(runs_root, holder):
    folder = runs.create("demo", "[run]\n")
    proc = holder("demo")
    assert runs.holder_pid(folder) == proc.pid
    with pytest.raises(RunBusyError, match=f"process {proc.pid} is writing to it") as info:
        folder.lock().acquire()
    assert info.value.exit_code == 3
    with pytest.raises(RunBusyError):
        runs.create("demo", "new\n", force=True)
    assert folder.config_path.read_text() == "[run]\n"


def test_lock_of_a_killed_writer_is_free_again(runs_root, holder):
    folder = runs.create("demo", "[run]\n")
    proc = holder("demo")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert runs.holder_pid(folder) is None  # the kernel dropped the flock; the stale pid is ignored
    with folder.lock():
        assert runs.holder_pid(folder) == os.getpid()
    assert runs.holder_pid(folder) is None


def test_runs_dir_follows_environment(runs_root, monkeypatch, tmp_path):
    assert runs.runs_dir() == runs_root
    assert runs.runs_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("SELFALIGN_RUNS")
    assert str(runs.runs_dir()) == "runs"
