"""Gain benchmark: does the default recipe make the embedded model follow instructions better?

Runs the recipe for N rounds (default 3) on the embedded model through the real commands
(`selfalign init`, `selfalign run --headless`), then answers the held-out benchmark with round 0's and
the last round's policy on the **test split** (the headline: prompts no setting was chosen by) and every
round's on the **dev split** (what ablation rows are chosen by), and prints the tables: per round,
prompt- and instruction-level constraint satisfaction with 95 % bootstrap intervals, the paired gain
over round 0 with its interval, mean length, clean length, distinct-2, the shares of empty, degenerate
(looping) and truncated answers, the unasked-form share (answers wearing a marked form their prompt did
not ask for: verifiers/forms.py) and wall time per stage; then each form's unasked share beside round 0's.

    .venv/bin/python benchmarks/gain.py                       # a new run in a temporary folder
    .venv/bin/python benchmarks/gain.py --run gain-default    # create or resume runs/gain-default
    .venv/bin/python benchmarks/gain.py --run ablation-x --set train.loss=sft --set pairs.rule=sft
    .venv/bin/python benchmarks/gain.py --run rej-fin --fork default-v3 --at 1:pairs --set pairs.rejected=finished
    .venv/bin/python benchmarks/gain.py --run default --seeds 0,1,2   # runs default-seed0, -seed1, -seed2
    .venv/bin/python benchmarks/gain.py --run default --seeds 0,1,2 --new-seeds 1   # only the next one

With --seeds the recipe runs once per seed (run.seed), one after the other, each in its own run folder,
and a summary gives each seed's paired test gain with its interval, their mean and their spread (the
run-to-run variation, which no single run's interval says anything about). Each finished seed's figures
are also written to benchmarks/results/RUN-seedN.json: commit them, and the same command in a later
session (whose machine may have lost the run folders) skips the seeds already recorded.

With --fork the row starts from another run's stored work (`selfalign init --fork`): a change to a late
stage reuses the source's prompts, samples and round-0 answers instead of making them again.

Everything is resumable: the loop and the evaluations skip what the run already stored, and the
figures so far are rewritten to RUN/gain.json and RUN/gain.md (and the seeds' summary to
NAME-seeds.md) after every step, so a stopped benchmark loses nothing; run the same command to go on.
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


def ratio(now: float | None, then: float | None) -> str:
    return "-" if now is None or not then else f"{now / then:.2f}x"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def table(rows: dict[int, dict], seconds: dict[int, dict[str, float]] | None = None) -> list[str]:
    """One line per round: satisfaction, gain, the signs of gaming, the unasked-form share, minutes."""
    lines = ["| round | prompt-level % [95 % CI] | gain over round 0, points [95 % CI] | instruction-level % "
             "| gain, points | length | clean length | distinct-2 | empty | degenerate | truncated "
             "| unasked form % | unasked form %, plain prompts | hollow % | echo % |" + (" minutes |" if seconds
                                                                                       is not None else ""),
             "|---" * (15 + (seconds is not None)) + "|"]
    for k, row in sorted(rows.items()):
        f, g = row["figures"], row.get("gain") or {}
        clean = "-" if f.get("clean_length_mean") is None else f"{f['clean_length_mean']:.0f}"
        habits = f.get("unasked") or {}
        plain = f.get("unasked_plain") or {}
        line = (f"| {k} | {pct(f['csr_prompt'])} | {pct(g.get('csr_prompt'), True)} | "
                f"{pct(f['csr_instruction'])} | {pct(g.get('csr_instruction'), True)} | "
                f"{f['length_mean']:.0f} | {clean} | {f['distinct2']:.3f} | {f['empty_share']:.3f} | "
                f"{f['degenerate_share']:.3f} | {f['truncated_share']:.3f} | {share(habits.get('marked'))} | "
                f"{share(plain.get('marked'))} | {share(f.get('hollow_share'))} | {share(f.get('echo_share'))} |")
        if seconds is not None:
            minutes = sum(v for stage, v in seconds.get(k, {}).items() if stage != PEAK) / 60
            line += f" {minutes:.1f} |"
        lines.append(line)
    return lines


def forms_table(rows: dict[int, dict]) -> list[str]:
    """Each form's unasked share per round (all answers / prompts without constraints), round 0 first."""
    if not rows or "unasked" not in next(iter(rows.values()))["figures"]:
        return []
    ks = sorted(rows)
    forms = list(rows[ks[0]]["figures"]["unasked"]["per_form"])
    lines = ["| form | " + " | ".join(f"round {k}: all / plain %" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for form in forms:
        cells = []
        for k in ks:
            f = rows[k]["figures"]
            every = f["unasked"]["per_form"].get(form, [None])[0]
            plain = f["unasked_plain"]["per_form"].get(form, [None])[0]
            cells.append(f"{share(every)} / {share(plain)}")
        lines.append(f"| {form} | " + " | ".join(cells) + " |")
    return lines


def render(name: str, settings: list[str], rows: dict[int, dict], seconds: dict[int, dict[str, float]],
           test_rows: dict[int, dict] | None = None) -> str:
    lines = [f"## Gain benchmark: {name}", "", f"Settings beyond the defaults: {' '.join(settings) or 'none'}", ""]
    if test_rows:
        n = next(iter(test_rows.values()))["figures"]["n"]
        lines += [f"Test split (the headline: {n} prompts with constraints from task texts no setting was chosen "
                  "by, plus prompts without constraints for the unasked forms):", "", *table(test_rows), ""]
    n = next(iter(rows.values()))["figures"]["n"] if rows else 0
    lines += [f"Dev split ({n} prompts with constraints, the one ablations are chosen by; wordings unseen in "
              "training, greedy answers; clean length: answers that finished by themselves without looping; "
              "unasked form: answers wearing a marked form (quoted, capitals, JSON, title, P.S., ...) their "
              "prompt did not ask for, over all answers and over the prompts without constraints):", "",
              *table(rows, seconds)]
    for label, split_rows in (("test", test_rows), ("dev", rows)):
        per_form = forms_table(split_rows or {})
        if per_form:
            lines += ["", f"Unasked forms per form, {label} split (share of the answers whose prompt did not ask "
                      "for the form that wear it anyway):", "", *per_form]
    lines += ["", "Wall time per stage (minutes; evaluate is the loop's own sample, not the whole benchmark) and the "
              "round's peak memory:", "", "| round | " + " | ".join(STAGES) + f" | {PEAK} |",
              "|---" * (len(STAGES) + 2) + "|"]
    for k in sorted(seconds):
        cells = [f"{seconds[k][s] / 60:.1f}" if s in seconds[k] else "-" for s in STAGES]
        cells.append(f"{seconds[k][PEAK]:.1f}" if PEAK in seconds[k] else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(name: str, k: int, env: dict, split: str) -> dict:
    out = selfalign("eval", name, "--round", str(k), "--split", split, "--all", "--format", "json", env=env,
                    capture=True)
    return json.loads(out.strip().splitlines()[-1])


def one_run(args, name: str, sets: list[str], runs_dir: Path, env: dict) -> dict:
    """Create or resume one run, run its loop, evaluate it on both splits; returns gain.json's content."""
    folder = runs_dir / name
    if not (folder / "config.toml").exists():
        init = ["init", name, "--set", f"run.rounds={args.rounds}", "--note", args.note or "gain benchmark"]
        for item in sets:
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
    test_rows: dict[int, dict] = {}

    def save() -> dict:
        seconds = stage_seconds(folder / "selfalign.db")
        result = {"settings": settings, "rounds": rows, "test": test_rows, "stage_seconds": seconds}
        (folder / "gain.json").write_text(json.dumps(result, indent=1))
        (folder / "gain.md").write_text(render(name, settings, rows, seconds, test_rows) + "\n")
        return result

    # round 0 and the last go first, on both splits: a call stopped halfway still leaves the headline gain
    last = adapters[-1:]
    for k in [0, *last]:
        print(f"evaluating round {k} on the test split", file=sys.stderr)
        test_rows[k] = evaluate(name, k, env, "test")
        save()
    for k in [0, *last, *([] if args.evaluate == "last" else adapters[:-1])]:
        print(f"evaluating round {k} on the whole dev split", file=sys.stderr)
        rows[k] = evaluate(name, k, env, "dev")
        save()
    result = save()
    print(render(name, settings, rows, result["stage_seconds"], test_rows))
    return result


RESULTS = Path(__file__).resolve().parent / "results"  # finished seeds' figures, kept with the code


def finished(result: dict) -> bool:
    """Whether a run's figures hold round 0 and a later round on both splits (what a seed's row needs)."""
    return all(len(result.get(split) or {}) >= 2 for split in ("test", "rounds"))


def seeds_summary(name: str, results: dict[int, dict]) -> str:
    """Each seed's paired gain (test, then dev) with its interval, their mean and spread, and the signs of
    gaming against each seed's own round 0."""
    lines = [f"## {name} over seeds {', '.join(str(s) for s in results)}", "",
             "| seed | test gain, points [95 % CI] | dev gain, points [95 % CI] | length vs round 0 | clean length "
             "vs round 0 | distinct-2 vs round 0 | degenerate, round 0 -> last | unasked form %, round 0 -> last "
             "| plain prompts: unasked form %, round 0 -> last | hollow %, round 0 -> last "
             "| echo %, round 0 -> last |", "|---" * 11 + "|"]
    gains = {"test": [], "dev": []}
    for seed, result in results.items():
        cells = []
        for split, rows in (("test", result.get("test", {})), ("dev", result.get("rounds", {}))):
            last = max((int(k) for k in rows), default=0)
            g = (rows.get(last) or rows.get(str(last)) or {}).get("gain") or {}
            if g.get("csr_prompt"):
                gains[split].append(g["csr_prompt"]["value"])
            cells.append(pct(g.get("csr_prompt"), True))
        rows = {int(k): v for k, v in result.get("test", {}).items()}
        if len(rows) >= 2:
            f0, f1 = rows[0]["figures"], rows[max(rows)]["figures"]
            cells += [ratio(f1["length_mean"], f0["length_mean"]),
                      ratio(f1["clean_length_mean"], f0["clean_length_mean"]), ratio(f1["distinct2"], f0["distinct2"]),
                      f"{share(f0['degenerate_share'])} -> {share(f1['degenerate_share'])}",
                      f"{share(f0['unasked']['marked'])} -> {share(f1['unasked']['marked'])}",
                      f"{share(f0['unasked_plain']['marked'])} -> {share(f1['unasked_plain']['marked'])}",
                      f"{share(f0.get('hollow_share'))} -> {share(f1.get('hollow_share'))}",
                      f"{share(f0.get('echo_share'))} -> {share(f1.get('echo_share'))}"]
        else:
            cells += ["-"] * 8
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    for split, values in gains.items():
        if values:
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
            lines.append(f"\n{split}: mean gain {mean * 100:+.1f} points over {len(values)} seeds, standard deviation "
                         f"{sd * 100:.1f}, range {min(values) * 100:+.1f} to {max(values) * 100:+.1f}")
    return "\n".join(lines)


def write_summary(name: str, results: dict[int, dict], runs_dir: Path) -> str:
    """The seeds' summary, written beside the runs after every seed (a stopped call keeps what it measured)."""
    summary = seeds_summary(name, results)
    (runs_dir / f"{name}-seeds.md").write_text(summary + "\n")
    (runs_dir / f"{name}-seeds.json").write_text(json.dumps(results, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run name: created with the settings below, or resumed (default: a new run "
                        "in a temporary folder); with --seeds, the prefix of one run per seed")
    parser.add_argument("--runs-dir", default=None, help="where runs live (default: SELFALIGN_RUNS or ./runs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting that differs from the default recipe (one change per ablation row)")
    parser.add_argument("--seeds", default=None, metavar="0,1,2", help="run the recipe once per seed (run.seed), "
                        "each in its own run RUN-seedN, and summarize the gains over seeds")
    parser.add_argument("--new-seeds", type=int, default=None, metavar="N", help="with --seeds: run at most N "
                        "seeds not yet recorded in this call, then summarize and stop (a session that has time for "
                        "one seed runs one and keeps the machine)")
    parser.add_argument("--model", default=None, help="model (default: the embedded smollm2-135m)")
    parser.add_argument("--note", default="", help="why this run exists")
    parser.add_argument("--fork", metavar="RUN", help="start the new run from RUN's stored work (needs --at)")
    parser.add_argument("--at", metavar="ROUND:STAGE", help="with --fork: where the new run goes on, e.g. 1:pairs")
    parser.add_argument("--skip-loop", action="store_true", help="only evaluate the rounds the run already has")
    parser.add_argument("--evaluate", choices=("every", "last"), default="every",
                        help="rounds answered on the whole dev split: every one, or round 0 and the last only "
                        "(each takes ~9 minutes on 2 cores; the test split always answers round 0 and the last)")
    args = parser.parse_args()

    env = dict(os.environ)
    if args.run:
        runs_dir = Path(args.runs_dir or env.get("SELFALIGN_RUNS") or "runs").resolve()
        name = args.run
    else:
        runs_dir = Path(tempfile.mkdtemp(prefix="selfalign-gain-"))
        name = "gain"
    env["SELFALIGN_RUNS"] = str(runs_dir)
    started = time.time()
    if args.seeds is None:
        one_run(args, name, args.sets, runs_dir, env)
    else:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--seeds takes whole numbers separated by commas, like 0,1,2; got {args.seeds!r}") \
                from None
        if any(item.startswith("run.seed=") for item in args.sets):
            raise SystemExit("--seeds sets run.seed for each run; leave --set run.seed out")
        if args.new_seeds is not None and args.new_seeds < 0:
            raise SystemExit(f"--new-seeds takes a whole number of seeds, 0 or more; got {args.new_seeds}")
        results, started_seeds = {}, 0
        for seed in seeds:  # one after the other: two torch jobs on one machine slow each other
            run = f"{name}-seed{seed}"
            recorded = RESULTS / f"{run}.json"
            kept = json.loads(recorded.read_text()) if recorded.exists() else {}
            if finished(kept):
                print(f"{run}: recorded in {recorded}; skipped", file=sys.stderr)
                results[seed] = kept
            elif args.new_seeds is not None and started_seeds >= args.new_seeds:
                print(f"{run}: not run in this call (--new-seeds {args.new_seeds}); the same command goes on",
                      file=sys.stderr)
                continue
            else:
                started_seeds += 1
                results[seed] = one_run(args, run, [*args.sets, f"run.seed={seed}"], runs_dir, env)
                if finished(results[seed]):
                    RESULTS.mkdir(exist_ok=True)
                    recorded.write_text(json.dumps(results[seed], indent=1) + "\n")
                write_summary(name, results, runs_dir)  # after each seed run: a stopped call keeps it
        print(write_summary(name, results, runs_dir))
    print(f"\n(this call: {(time.time() - started) / 60:.1f} min; tables are in {runs_dir})")


if __name__ == "__main__":
    main()
