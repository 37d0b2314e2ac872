"""Mirror a run's numbers where users already look: TensorBoard and W&B (config `report.to`, like TRL's
`report_to`).

The SQLite database stays the source of truth; a mirror only copies what it has not copied yet, so the
loop can call `sync` as often as it likes and a resumed process does not write a point twice (what was
copied is remembered in `report/mirrored.json` in the run folder). Names are the database's slash names:
round metrics (`eval/csr_prompt`, `judge/...`, `pairs/...`) at step = round in TensorBoard; train steps as
`train/loss`, `rewards/margin`, `rewards/accuracy`, `train/lr`... at a global step that runs on across
rounds. W&B wants one rising step, so there round metrics go at the global step their round ended on,
with `round` beside them. `selfalign export RUN --tensorboard DIR` writes the same from a finished run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from selfalign.errors import UsageError

SYNC_EVERY_S = 10.0  # live mirroring during a stage; a stage's end always syncs
TRAIN_TAGS = {"loss": "train/loss", "reward_margin": "rewards/margin", "accuracy": "rewards/accuracy",
              "rewards_chosen": "rewards/chosen", "rewards_rejected": "rewards/rejected", "lr": "train/lr",
              "grad_norm": "train/grad_norm", "tokens_per_s": "train/tokens_per_s"}


class Mirror:
    """Copies new train steps and round metrics from a run's store into its sinks."""

    def __init__(self, sinks: list, cursor_path: Path | None = None):
        self.sinks = sinks
        self.cursor_path = cursor_path
        self.cursor = _read_cursor(cursor_path)
        self._last_sync = 0.0

    def sync(self, store, *, force: bool = True) -> None:
        """Write what is new since the last sync; without `force`, at most every SYNC_EVERY_S seconds."""
        if not self.sinks or (not force and time.monotonic() - self._last_sync < SYNC_EVERY_S):
            return
        self._last_sync = time.monotonic()
        metrics = store.metrics()
        written_steps: dict[str, int] = self.cursor.setdefault("train", {})
        written_metrics: dict[str, float] = self.cursor.setdefault("metrics", {})
        offset = 0  # global step of each round's step 0: the steps of the rounds before it
        for round_k in sorted({r.k for r in store.rounds()} | set(metrics)):
            after = written_steps.get(str(round_k), -1)
            steps = store.train_steps(round_k)
            for step in steps:
                if step.step > after:
                    values = {tag: getattr(step, field) for field, tag in TRAIN_TAGS.items()
                              if getattr(step, field) is not None}
                    for sink in self.sinks:
                        sink.train_step(offset + step.step, values)
                    written_steps[str(round_k)] = step.step
            offset += (steps[-1].step + 1) if steps else 0
            new = {name: value for name, value in metrics.get(round_k, {}).items()
                   if value is not None and written_metrics.get(f"{round_k}|{name}") != value}
            if new:
                for sink in self.sinks:
                    sink.round_metrics(round_k, max(offset - 1, 0), new)
                written_metrics.update({f"{round_k}|{name}": value for name, value in new.items()})
        for sink in self.sinks:
            sink.flush()
        self._save_cursor()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def _save_cursor(self) -> None:
        if self.cursor_path is None:
            return
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.cursor_path.with_suffix(".partial")
        partial.write_text(json.dumps(self.cursor))
        os.replace(partial, self.cursor_path)  # a killed process leaves the old cursor, never half of one


def _read_cursor(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}  # a damaged cursor: mirror everything again rather than fail the run


class TensorBoardSink:
    def __init__(self, logdir: Path, config_toml: str = ""):
        writer_cls = _tensorboard_writer()
        self.writer = writer_cls(log_dir=str(logdir))
        if config_toml:
            self.writer.add_text("config", "```toml\n" + config_toml + "\n```", 0)

    def train_step(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def round_metrics(self, round_k: int, global_step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, round_k)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, directory: Path, run_name: str, run_id: str, project: str, entity: str, config: dict):
        try:
            import wandb
        except ImportError as exc:
            raise UsageError("report.to names wandb but it is not installed; pip install wandb, or remove it "
                             "from report.to") from exc
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, entity=entity or None, name=run_name, id=run_id, resume="allow",
                              dir=str(directory), config=config)

    def train_step(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def round_metrics(self, round_k: int, global_step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "round": round_k}, step=global_step)

    def flush(self) -> None:
        pass  # wandb streams on its own

    def close(self) -> None:
        self.run.finish()


def _tensorboard_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's writer needs the tensorboard package
        raise UsageError("report.to names tensorboard but it is not installed; pip install 'selfalign[report]' "
                         "(or tensorboard), or remove it from report.to") from exc
    return SummaryWriter


def for_run(folder, cfg) -> Mirror:
    """The mirror that the run's `report.to` asks for (one without sinks when it is empty)."""
    from selfalign import config as config_mod

    sinks: list = []
    targets = cfg.report.to
    if "tensorboard" in targets:
        logdir = Path(cfg.report.tensorboard_dir) if cfg.report.tensorboard_dir else folder.tensorboard_dir
        sinks.append(TensorBoardSink(logdir, config_mod.dumps(cfg)))
    if "wandb" in targets:
        run_id = f"{folder.name}-{_created_stamp(folder)}"  # one W&B run per run folder, resumed after a restart
        sinks.append(WandbSink(folder.report_dir, folder.name, run_id, cfg.report.wandb_project,
                               cfg.report.wandb_entity, cfg.to_dict()))
    return Mirror(sinks, folder.report_dir / "mirrored.json")


def export_tensorboard(folder, out: str | Path) -> Path:
    """Every train step and round metric of a run into fresh TensorBoard event files under `out`."""
    from selfalign import config as config_mod
    from selfalign.store import open_store

    out = Path(out)
    if out.is_dir() and any(out.glob("**/events.out.tfevents.*")):
        raise UsageError(f"{out} already holds TensorBoard event files; pick an empty folder so no point is "
                         "written twice")
    cfg = config_mod.load(folder.config_path)
    mirror = Mirror([TensorBoardSink(out, config_mod.dumps(cfg))])
    try:
        with open_store(folder.db_path) as store:
            mirror.sync(store)
    finally:
        mirror.close()
    return out


def _created_stamp(folder) -> str:
    """A stable id part: the run database's creation time, so a new run of the same name is a new W&B run."""
    from selfalign.store import open_store

    with open_store(folder.db_path) as store:
        info = store.run_info()
    stamp = info.created_at if info else "0"
    return "".join(ch for ch in stamp if ch.isalnum())[:20]
