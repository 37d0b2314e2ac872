"""Metrics mirrored into TensorBoard (report.to) from a real tiny-model loop, read back with TensorBoard's own
event reader; the after-the-fact export; bad settings."""

import sys

import pytest
from click.testing import CliRunner
from test_loop import make_run

from selfalign import config, loop
from selfalign.cli import cli
from selfalign.errors import EXIT_OK, ConfigError, UsageError
from selfalign.store import open_store

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected(folder) -> dict[str, list[tuple[int, float]]]:
    """What the database says the mirror must hold: round metrics at step = round, train steps at a global step."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open_store(folder.db_path) as store:
        for k, metrics in sorted(store.metrics().items()):
            for name, value in metrics.items():
                if value is not None:
                    out.setdefault(name, []).append((k, value))
        offset = 0
        for r in store.rounds():
            steps = store.train_steps(r.k)
            for s in steps:
                out.setdefault("train/loss", []).append((offset + s.step, s.loss))
                if s.reward_margin is not None:
                    out.setdefault("rewards/margin", []).append((offset + s.step, s.reward_margin))
            offset += len(steps)
    return out


def same(got, want) -> bool:
    return [s for s, _ in got] == [s for s, _ in want] and all(
        abs(a - b) <= 1e-5 * max(1.0, abs(b)) for (_, a), (_, b) in zip(got, want, strict=True))


def test_a_round_mirrors_every_metric_and_train_step_into_tensorboard(tiny_model_dir, runs_root):
    folder = make_run(tiny_model_dir, "tb", "self-reward", 'report.to=["tensorboard"]', "run.rounds=1")
    assert loop.run(folder, quiet=True) == EXIT_OK
    got, want = scalars(folder.tensorboard_dir), expected(folder)
    assert "eval/csr_instruction" in want and "train/loss" in want and "pairs/count" in want
    for tag, points in want.items():
        assert tag in got, f"{tag} was not mirrored"
        assert same(got[tag], points), tag
    assert {"rewards/accuracy", "train/lr", "train/tokens_per_s"} <= set(got)

    # a second round in a new process start: only the new points are written, none twice
    text = folder.config_path.read_text().replace("rounds = 1", "rounds = 2")
    folder.config_path.write_text(text)
    assert loop.run(folder, quiet=True) == EXIT_OK
    got, want = scalars(folder.tensorboard_dir), expected(folder)
    assert max(k for k, _ in want["eval/csr_instruction"]) == 2
    for tag, points in want.items():
        assert same(got[tag], points), tag

    # after the fact: the same numbers into an empty folder, and a clear refusal to write them twice
    out = runs_root / "exported"
    result = CliRunner().invoke(cli, ["export", "tb", "--tensorboard", str(out)])
    assert result.exit_code == 0, result.output
    assert "tensorboard --logdir" in result.output
    exported = scalars(out)
    for tag, points in want.items():
        assert same(exported[tag], points), tag
    again = CliRunner().invoke(cli, ["export", "tb", "--tensorboard", str(out)])
    assert again.exit_code == 2 and "already holds TensorBoard event files" in again.output


def test_report_settings_are_checked():
    assert config.build(sets=['report.to=["tensorboard", "wandb"]']).report.to == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="report.to.*one of tensorboard, wandb"):
        config.build(sets=['report.to=["mlflow"]'])


def test_a_missing_tensorboard_is_one_clear_error(tiny_model_dir, runs_root, monkeypatch):
    folder = make_run(tiny_model_dir, "tb-missing", "self-reward", 'report.to=["tensorboard"]')
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(UsageError, match=r"pip install 'selfalign\[report\]'"):
        loop.run(folder, quiet=True)
    with open_store(folder.db_path) as store:
        assert store.rounds() == []  # it failed before any work


def test_wandb_mirror_offline(tiny_model_dir, runs_root, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    folder = make_run(tiny_model_dir, "wb", "self-reward", 'report.to=["wandb"]', "run.rounds=1")
    assert loop.run(folder, quiet=True) == EXIT_OK
    # the sink wrote an offline run that `wandb sync` uploads; its records name our metrics
    (records,) = (folder.report_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = records.read_bytes()
    assert all(name.encode() in data for name in ("train/loss", "rewards/margin", "eval/csr_instruction")), \
        wandb.__version__
