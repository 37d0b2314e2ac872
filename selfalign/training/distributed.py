"""Data-parallel training of one round: the train stage under `accelerate launch` (or torchrun).

The loop stays one process: it owns the run database, the lock and the generation engine. Only
the train stage fans out. With `train.processes = N > 1` it writes a job folder beside the round's
adapter and starts

    accelerate launch --num_processes N -m selfalign.training.distributed rounds/<k>/distributed

Every process loads the model, trains on its share of each step's batches (trainer.TorchDistributed)
and rank 0 writes the adapter, its checkpoints and one JSON line per optimizer step to
steps.jsonl, which the loop copies into the database as they come. A stop is a file the loop
writes; rank 0 also stops when the loop's process has gone, so a killed loop leaves no orphans
training on. Rank 0 marks a stop with the file `stopped` (launchers replace a process's exit status
with their own); a failing process writes its one-line reason to error-<rank>.txt.

The same job folder can be trained by hand, for example on another machine's GPUs:
`accelerate launch --num_processes 4 -m selfalign.training.distributed runs/RUN/rounds/3/distributed`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from selfalign import config as config_mod
from selfalign.errors import EXIT_STOPPED, SelfalignError, quiet_library_warnings
from selfalign.training.trainer import StepRecord

PARENT_ENV = "SELFALIGN_LOOP_PID"  # set by launch(): the processes stop when that process is gone
POLL_SECONDS = 0.5


class DistributedTrainingError(SelfalignError):
    """The launched training processes failed."""


# ------------------------------------------------------------------ the loop's side


def write_job(folder: Path, examples, cfg: config_mod.Config, *, seed: int, out_dir: Path,
              init_adapter: str | None, reference_adapter: str | None) -> Path:
    """Everything the processes need, as files: config.toml, examples.json, job.json."""
    folder.mkdir(parents=True, exist_ok=True)
    config_mod.save(cfg, folder / "config.toml")
    (folder / "examples.json").write_text(json.dumps([dataclasses.asdict(e) for e in examples]), encoding="utf-8")
    job = {"seed": seed, "out_dir": str(out_dir), "init_adapter": init_adapter,
           "reference_adapter": reference_adapter}
    (folder / "job.json").write_text(json.dumps(job, indent=1), encoding="utf-8")
    return folder


def command(cfg: config_mod.Config, folder: Path, port: int | None = None) -> list[str]:
    """The launcher's command line. The python running the loop runs the launcher, so a virtual
    environment without its bin/ on PATH still works."""
    n, port = cfg.train.processes, port or free_port()
    target = ["-m", "selfalign.training.distributed", str(folder)]
    if cfg.train.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(n),
                "--master_addr", "127.0.0.1", "--master_port", str(port), *target]
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if cfg.train.accelerate_config:
        launch += ["--config_file", cfg.train.accelerate_config]
    else:  # every value given, so accelerate neither asks nor warns; --multi_gpu selects its torchrun path
        launch += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    return launch + ["--num_processes", str(n), *target]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(folder: Path, cfg: config_mod.Config, *, on_step: Callable[[StepRecord], None],
           should_stop: Callable[[], bool], log_path: Path) -> None:
    """Run the job in `folder` to the end, copying its steps to on_step as they come.

    Raises trainer.StopTraining when stopped, DistributedTrainingError when the processes fail."""
    from selfalign.training.trainer import StopTraining

    for stale in ["stop", "stopped", "steps.jsonl", *(p.name for p in folder.glob("error-*.txt"))]:
        (folder / stale).unlink(missing_ok=True)
    cmd = command(cfg, folder)
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(_threads_per_process(cfg))),
                        PARENT_ENV: str(os.getpid())}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    steps_file, offset = folder / "steps.jsonl", 0
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                finished = process.poll() is not None
                offset = _copy_steps(steps_file, offset, on_step)
                if finished:
                    break
                if should_stop() and not (folder / "stop").exists():
                    (folder / "stop").touch()
                time.sleep(POLL_SECONDS)
        finally:
            if process.poll() is None:  # the loop itself is going down: take the processes with it
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    if (folder / "stopped").exists():  # the launchers turn every exit status into their own
        raise StopTraining()
    if process.returncode != 0:
        raise DistributedTrainingError(
            f"the {cfg.train.processes}-process train stage failed (exit {process.returncode}): "
            f"{_first_error(folder, log_path)}; see {log_path}, or set train.processes=1")


def _copy_steps(path: Path, offset: int, on_step: Callable[[StepRecord], None]) -> int:
    """Hand over the complete lines written since `offset`; return the new offset."""
    if not path.is_file():
        return offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
    for line in data[:end].splitlines():
        if line.strip():
            on_step(StepRecord(**json.loads(line)))
    return offset + end


def _threads_per_process(cfg: config_mod.Config) -> int:
    return max(1, (os.cpu_count() or 1) // cfg.train.processes)


def _first_error(folder: Path, log_path: Path) -> str:
    """What the lowest failing rank said, else the last line that looks like an error in the output."""
    for path in sorted(folder.glob("error-*.txt")):
        return path.read_text(encoding="utf-8").strip()[:300]
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        if "Error" in line or "error:" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


# ------------------------------------------------------------------ each process's side


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    from selfalign import models
    from selfalign.training.trainer import Example, StopTraining, TorchDistributed, TrainJob, train

    quiet_library_warnings()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "job.json").is_file():
        print("error: give the job folder the train stage wrote (rounds/<k>/distributed, with job.json)",
              file=sys.stderr)
        return 2
    folder = Path(args[0])
    job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    cfg = config_mod.load(folder / "config.toml")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.run.device in ("auto", "cuda")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    group = TorchDistributed(device)
    parent = int(os.environ[PARENT_ENV]) if os.environ.get(PARENT_ENV) else None
    try:
        model, tokenizer = models.load(cfg.model.name, device=str(device), dtype=cfg.model.dtype)
        examples = [Example(**e) for e in json.loads((folder / "examples.json").read_text(encoding="utf-8"))]

        def on_step(step: StepRecord) -> None:  # rank 0 only; one whole line per step
            with open(folder / "steps.jsonl", "a", encoding="utf-8") as steps:
                steps.write(json.dumps(dataclasses.asdict(step)) + "\n")

        def should_stop() -> bool:
            return (folder / "stop").exists() or (parent is not None and not _alive(parent))

        try:
            train(model, TrainJob(examples, cfg.train, job["out_dir"], pad_id=tokenizer.pad_token_id, seed=job["seed"],
                                  init_adapter=job["init_adapter"], reference_adapter=job["reference_adapter"]),
                  on_step=on_step, should_stop=should_stop, group=group)
        except StopTraining:
            if group.rank == 0:
                (folder / "stopped").touch()
            return EXIT_STOPPED
    except Exception as exc:  # one line for the loop's error message; the traceback stays in the output
        first = (str(exc).strip().splitlines() or [""])[0]
        (folder / f"error-{group.rank}.txt").write_text(f"rank {group.rank}: {type(exc).__name__}: {first}",
                                                         encoding="utf-8")
        raise
    finally:
        dist.destroy_process_group()
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
