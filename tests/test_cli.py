"""The command line: help, init and its bad inputs (one line, exit code, files untouched)."""

import hashlib
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from selfalign.cli import cli

COMMANDS = ["init", "run", "watch", "status", "eval", "compare", "note", "export", "serve", "models", "config"]


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_help_lists_every_design_command():
    result = invoke("--help")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ") and line.split()[0] in COMMANDS]
    assert listed == COMMANDS
    assert "3 run busy" in result.output


def test_help_imports_nothing_heavy():
    code = ("import sys; from selfalign.cli import main; sys.argv = ['selfalign', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'textual', 'sqlite_utils', 'peft') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_watch_needs_a_terminal_and_a_run(runs_root):
    missing = invoke("watch", "nope")
    assert missing.exit_code == 1 and "no run named 'nope'" in missing.output
    assert invoke("init", "demo").exit_code == 0
    result = invoke("watch", "demo")  # CliRunner's stdin is not a terminal
    assert result.exit_code == 2 and "needs a terminal" in result.output and "selfalign status demo" in result.output


def test_init_writes_a_loadable_run(runs_root):
    result = invoke("init", "demo", "--recipe", "isheep", "--set", "run.rounds=2", "--note", "first try")
    assert result.exit_code == 0, result.output
    from selfalign import config
    from selfalign.store import open_store

    cfg = config.load(runs_root / "demo" / "config.toml")
    assert (cfg.run.recipe, cfg.run.rounds, cfg.run.note, cfg.train.loss) == ("isheep", 2, "first try", "sft")
    with open_store(runs_root / "demo" / "selfalign.db") as store:
        assert store.run_info().note == "first try"
    shown = invoke("config", "demo")
    assert shown.exit_code == 0 and 'recipe = "isheep"' in shown.output


def test_init_accepts_a_local_model_folder(runs_root, tiny_model_dir):
    result = invoke("init", "tiny", "--model", str(tiny_model_dir))
    assert result.exit_code == 0, result.output
    assert str(tiny_model_dir) in (runs_root / "tiny" / "config.toml").read_text()


def test_init_from_a_config_file_with_runs_dir_option(tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text('[generate]\ntemperature = 0.9\n')
    result = invoke("--runs-dir", str(tmp_path / "elsewhere"), "init", "x", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    assert "temperature = 0.9" in (tmp_path / "elsewhere" / "x" / "config.toml").read_text()


@pytest.mark.parametrize("args, code, message", [
    (["init", "../x"], 2, "run name '../x' is not allowed"),
    (["init", "/tmp/abs"], 2, "is not allowed"),
    (["init", ".hidden"], 2, "is not allowed"),
    (["init", "x", "--set", "generate.temprature=1"], 2, "did you mean 'temperature'"),
    (["init", "x", "--set", "generate.temperature=-1"], 2, "must be >= 0"),
    (["init", "x", "--set", "generate.samples_per_prompt=1"], 2, "cannot make preference pairs"),
    (["init", "x", "--model", "no-such-model"], 2, "unknown model 'no-such-model'"),
    (["init", "x", "--model", "./missing/folder"], 2, "does not exist"),
    (["init", "x", "--config", "nope.toml"], 2, "does not exist"),
    (["init", "x", "--set", "eval.heldout_file=nope.jsonl"], 2, "eval.heldout_file = 'nope.jsonl'"),
    (["init", "x", "--set", "instruct.seed_file=nope.jsonl"], 2, "instruct.seed_file = 'nope.jsonl'"),
    (["init", "x", "--set", "generate.urial_template=self_instruct.txt"], 2, "generate.urial_template"),
    (["config", "ghost"], 1, "no run named 'ghost'"),
])
def test_bad_input_gives_one_line_and_exit_code(runs_root, args, code, message):
    result = invoke(*args)
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (runs_root / "x").exists()


def test_broken_toml_file(tmp_path, runs_root):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    result = invoke("init", "x", "--config", str(bad))
    assert result.exit_code == 2 and "is not valid TOML" in result.output
    assert bad.read_text() == "[run\n"


def test_model_folder_without_weights(tmp_path, runs_root):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    result = invoke("init", "x", "--model", str(folder))
    assert result.exit_code == 2 and "has no weights" in result.output


def test_init_on_existing_run_refuses_and_leaves_files(runs_root):
    assert invoke("init", "demo").exit_code == 0
    before = digest(runs_root / "demo")
    result = invoke("init", "demo", "--set", "run.rounds=9")
    assert result.exit_code == 2 and "already exists" in result.output and "--force" in result.output
    assert digest(runs_root / "demo") == before
    assert invoke("init", "demo", "--force", "--set", "run.rounds=9").exit_code == 0
    assert "rounds = 9" in (runs_root / "demo" / "config.toml").read_text()


def test_init_force_on_a_locked_run_exits_3(runs_root):
    assert invoke("init", "demo").exit_code == 0
    before = digest(runs_root / "demo")
    hold = ("import sys, time; from selfalign import runs; "
            "runs.locate('demo').lock().acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        result = subprocess.run([sys.executable, "-m", "selfalign", "init", "demo", "--force"],
                                capture_output=True, text=True)
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "is busy" in result.stderr
    assert {k: v for k, v in digest(runs_root / "demo").items() if k.name != ".lock"} == \
        {k: v for k, v in before.items() if k.name != ".lock"}


def test_database_that_is_not_ours(runs_root):
    assert invoke("init", "demo").exit_code == 0
    db = runs_root / "demo" / "selfalign.db"
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"not a database at all")
    from selfalign.errors import StoreError
    from selfalign.store import open_store

    with pytest.raises(StoreError, match="not a SQLite database"):
        open_store(db)
    assert db.read_bytes() == b"not a database at all"


def test_models_list(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_MODEL_CACHE", str(tmp_path / "empty-cache"))
    result = invoke("models", "list")
    assert result.exit_code == 0
    assert "smollm2-135m" in result.output and "not pulled" in result.output


def test_config_keys_puts_what_a_newcomer_sets_first_and_shows_a_runs_values(runs_root):
    result = invoke("config", "--keys")
    assert result.exit_code == 0 and "train.lora_r = 16" in result.output
    first = result.output.split("\n\n")[0]
    assert first.startswith("# start here") and "run.rounds = 3" in first and "model.name" in first
    assert "train.lora_r" not in first  # a specialist's key comes later, in its section
    assert invoke("init", "k", "--set", "train.learning_rate=0.0001").exit_code == 0
    listed = invoke("config", "k", "--keys")
    assert listed.exit_code == 0 and "train.learning_rate = 0.0001   (default 0.0002)" in listed.output
    plain = invoke("config", "k")  # without --keys: the run's config.toml itself
    assert plain.output == (runs_root / "k" / "config.toml").read_text()


def test_a_full_disk_is_one_line_with_its_fix_from_a_file_write_or_from_sqlite(tmp_path):
    import sqlite3

    from selfalign.cli import Group
    from selfalign.errors import disk_full

    @click.group(cls=Group)
    def app():
        pass

    @app.command()
    def write():
        with open("/dev/full", "wb") as out:  # a real device whose every write fails with ENOSPC
            out.write(b"x" * 65536)
            out.flush()

    @app.command()
    def fail():
        raise ValueError("not a disk problem")

    result = CliRunner().invoke(app, ["write"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("error: the disk is full") and "run the same command again" in result.output
    assert isinstance(CliRunner().invoke(app, ["fail"]).exception, ValueError)  # anything else is not hidden

    db = sqlite3.connect(tmp_path / "small.db")
    db.execute("create table t (x blob)")
    db.execute("pragma max_page_count = 4")  # SQLite's own 'database or disk is full', as on a full disk
    with pytest.raises(sqlite3.OperationalError) as failure:
        for _ in range(100):
            db.execute("insert into t values (zeroblob(4096))")
    assert "the disk is full" in str(disk_full(failure.value))
    assert disk_full(sqlite3.OperationalError("no such table: t")) is None
