"""Gain benchmark: does the default recipe make the embedded model follow instructions better?

Runs the recipe for N rounds (default 3) on the embedded model through the real commands
(`selfalign init`, `selfalign run --headless`), then answers the whole held-out benchmark with every
round's policy (`selfalign eval --all --against 0`) and prints one table: per round, prompt- and
instruction-level constraint satisfaction with 95 % bootstrap intervals, the paired gain over round 0
with its interval, mean length, distinct-2, the shares of empty, degenerate (looping) and truncated
answers, and wall time per stage.

    .venv/bin/python benchmarks/gain.py                       # a new run in a temporary folder
    .venv/bin/python benchmarks/gain.py --run gain-default    # create or resume runs/gain-default
    .venv/bin/python benchmarks/gain.py --run ablation-x --set train.loss=sft --set pairs.rule=sft
    .venv/bin/python benchmarks/gain.py --run rej-fin --fork default-v3 --at 1:pairs --set pairs.rejected=finished

With --fork the row starts from another run's stored work (`selfalign init --fork`): a change to a late
stage reuses the source's prompts, samples and round-0 answers instead of making them again.

Everything is resumable: the loop and the evaluations skip what the run already stored, and the
figures so far are rewritten to RUN/gain.json and RUN/gain.md after every step, so a stopped
benchmark loses nothing; run the same command to go on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selfalign import config
from selfalign.stages import STAGES

PEAK = "peak GiB"


def selfalign(*args: str, env: dict, capture: bool = False) -> str:
    """Run one selfalign command; stop the benchmark with its error line when it fails."""
    command = [sys.executable, "-m", "selfalign", *args]
    result = subprocess.run(command, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        raise SystemExit(f"`selfalign {' '.join(args)}` failed with exit code {result.returncode}")
    return result.stdout or ""


def stage_seconds(db_path: Path) -> dict[int, dict[str, float]]:
    """round -> stage -> working seconds, and under 'peak GiB' the round's highest stage peak memory."""
    from selfalign.store import open_store

    with open_store(db_path) as store:
        out: dict[int, dict[str, float]] = {}
        for s in store.stages():
            if s.seconds is not None:
                out.setdefault(s.round, {})[s.name] = s.seconds
            if s.peak_rss_mib is not None:
                row = out.setdefault(s.round, {})
                row[PEAK] = max(row.get(PEAK, 0.0), s.peak_rss_mib / 1024)
        return out


def pct(estimate: dict | None, signed: bool = False) -> str:
    if not estimate:
        return "-"
    sign = "+" if signed else ""
    return (f"{estimate['value'] * 100:{sign}.1f} [{estimate['low'] * 100:{sign}.1f}, "
            f"{estimate['high'] * 100:{sign}.1f}]")


def render(name: str, settings: list[str], rows: dict[int, dict], seconds: dict[int, dict[str, float]]) -> str:
    lines = [f"## Gain benchmark: {name}", "",
             f"Settings beyond the defaults: {' '.join(settings) or 'none'}", "",
             "| round | prompt-level % [95 % CI] | gain over round 0, points [95 % CI] | instruction-level % "
             "| gain, points | length | clean length | distinct-2 | empty | degenerate | truncated | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, row in sorted(rows.items()):
        f, g = row["figures"], row.get("gain") or {}
        minutes = sum(v for stage, v in seconds.get(k, {}).items() if stage != PEAK) / 60
        clean = "-" if f.get("clean_length_mean") is None else f"{f['clean_length_mean']:.0f}"
        lines.append(f"| {k} | {pct(f['csr_prompt'])} | {pct(g.get('csr_prompt'), True)} | "
                     f"{pct(f['csr_instruction'])} | {pct(g.get('csr_instruction'), True)} | "
                     f"{f['length_mean']:.0f} | {clean} | {f['distinct2']:.3f} | {f['empty_share']:.3f} | "
                     f"{f['degenerate_share']:.3f} | {f['truncated_share']:.3f} | {minutes:.1f} |")
    n = next(iter(rows.values()))["figures"]["n"] if rows else 0
    lines += ["", f"{n} held-out prompts (wordings unseen in training), greedy answers; clean length: answers that "
              "finished by themselves without looping. Wall time per stage "
              "(minutes; evaluate is the loop's own sample, not the whole benchmark) and the round's peak memory:",
              "", "| round | " + " | ".join(STAGES) + f" | {PEAK} |", "|---" * (len(STAGES) + 2) + "|"]
    for k in sorted(seconds):
        cells = [f"{seconds[k][s] / 60:.1f}" if s in seconds[k] else "-" for s in STAGES]
        cells.append(f"{seconds[k][PEAK]:.1f}" if PEAK in seconds[k] else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run name: created with the settings below, or resumed (default: a new run "
                        "in a temporary folder)")
    parser.add_argument("--runs-dir", default=None, help="where runs live (default: SELFALIGN_RUNS or ./runs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting that differs from the default recipe (one change per ablation row)")
    parser.add_argument("--model", default=None, help="model (default: the embedded smollm2-135m)")
    parser.add_argument("--note", default="", help="why this run exists")
    parser.add_argument("--fork", metavar="RUN", help="start the new run from RUN's stored work (needs --at)")
    parser.add_argument("--at", metavar="ROUND:STAGE", help="with --fork: where the new run goes on, e.g. 1:pairs")
    parser.add_argument("--skip-loop", action="store_true", help="only evaluate the rounds the run already has")
    parser.add_argument("--evaluate", choices=("every", "last"), default="every",
                        help="rounds answered on the whole benchmark: every one, or round 0 and the last only "
                        "(each takes ~9 minutes on 2 cores)")
    args = parser.parse_args()

    env = dict(os.environ)
    if args.run:
        runs_dir = Path(args.runs_dir or env.get("SELFALIGN_RUNS") or "runs").resolve()
        name = args.run
    else:
        runs_dir = Path(tempfile.mkdtemp(prefix="selfalign-gain-"))
        name = "gain"
    env["SELFALIGN_RUNS"] = str(runs_dir)
    folder = runs_dir / name
    started = time.time()
    if not (folder / "config.toml").exists():
        init = ["init", name, "--set", f"run.rounds={args.rounds}", "--note", args.note or "gain benchmark"]
        for item in args.sets:
            init += ["--set", item]
        if args.model:
            init += ["--model", args.model]
        if args.fork or args.at:
            init += ["--fork", args.fork or "", "--at", args.at or ""]
        selfalign(*init, env=env)
    print(f"run folder: {folder}", file=sys.stderr)

    if not args.skip_loop:
        selfalign("run", name, "--headless", "--quiet", env=env)
    adapters = sorted(int(p.name) for p in (folder / "rounds").glob("*") if (p / "adapter").is_dir())
    # the run's own settings, not this call's --set: a resumed or forked run was made by another call
    settings = config.changes(config.load(folder / "config.toml"))
    rows: dict[int, dict] = {}
    # round 0 and the last go first: a call stopped halfway still leaves the headline gain
    for k in [0, *adapters[-1:], *([] if args.evaluate == "last" else adapters[:-1])]:
        print(f"evaluating round {k} on the whole benchmark", file=sys.stderr)
        out = selfalign("eval", name, "--round", str(k), "--all", "--format", "json", env=env, capture=True)
        rows[k] = json.loads(out.strip().splitlines()[-1])
        seconds = stage_seconds(folder / "selfalign.db")
        (folder / "gain.json").write_text(json.dumps({"settings": settings, "rounds": rows,
                                                      "stage_seconds": seconds}, indent=1))
        (folder / "gain.md").write_text(render(name, settings, rows, seconds) + "\n")
    print(render(name, settings, rows, stage_seconds(folder / "selfalign.db")))
    print(f"\n(this call: {(time.time() - started) / 60:.1f} min; the table is also in {folder / 'gain.md'})")


if __name__ == "__main__":
    main()
