"""Command line: parse, call, print. Heavy modules are imported inside commands so `--help` is instant."""

from __future__ import annotations

import os
import sys

import click

from selfalign.errors import SelfalignError, UsageError, disk_full, quiet_library_warnings

EXIT_CODES_HELP = "Exit codes: 0 done, 1 error, 2 bad usage or config, 3 run busy, 4 stopped by request."


class Group(click.Group):
    """Turns a SelfalignError into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        quiet_library_warnings()
        try:
            return super().invoke(ctx)
        except SelfalignError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            full = disk_full(exc)
            if full is None:
                raise
            click.echo(f"error: {full}", err=True)
            sys.exit(full.exit_code)

    def list_commands(self, ctx):  # in the order a user meets them, not alphabetical
        order = ["init", "run", "watch", "status", "eval", "compare", "note", "export", "serve", "correct", "models",
                 "config"]
        return sorted(self.commands, key=lambda name: order.index(name) if name in order else len(order))


@click.group(cls=Group, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selfalign")
@click.option("--runs-dir", envvar="SELFALIGN_RUNS", type=click.Path(file_okay=False), default=None,
              help="Folder holding run folders (default ./runs; env SELFALIGN_RUNS).")
@click.pass_context
def cli(ctx: click.Context, runs_dir: str | None) -> None:
    """Align a small open language model with its own outputs, round after round."""
    ctx.obj = {"runs_dir": runs_dir}


@cli.command()
@click.argument("name")
@click.option("--recipe", type=click.Choice(["self-reward", "isheep", "cyclealign"]), default=None,
              help="Method (default self-reward).")
@click.option("--model", "model_name", default=None,
              help="Registry name, Hugging Face id or local folder (default smollm2-135m).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Start from this TOML file.")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override one setting.")
@click.option("--note", default="", help="Why this run exists (shown by compare and status).")
@click.option("--force", is_flag=True, help="Replace an existing run of that name (deletes its data).")
@click.option("--fork", "source", default=None, metavar="RUN",
              help="Start from RUN's stored work (its settings, with --set applied) instead of from nothing.")
@click.option("--at", default=None, metavar="ROUND:STAGE",
              help="With --fork: the stage the new run starts at (for example 1:pairs); earlier work is copied.")
@click.pass_context
def init(ctx, name, recipe, model_name, config_file, sets, note, force, source, at):
    """Create runs/NAME/ with its resolved config.toml and database, or fork another run."""
    from selfalign import __version__, config, models, prompts, runs

    runs.check_name(name)
    if source or at:
        from selfalign import fork

        if not (source and at) or recipe or model_name or config_file:
            raise UsageError("--fork RUN needs --at ROUND:STAGE and takes RUN's recipe, model and settings "
                             "(change later stages with --set)")
        folder = fork.fork(runs.locate(source, ctx.obj["runs_dir"]), name, at, sets, root=ctx.obj["runs_dir"],
                           note=note, force=force, version=__version__)
        click.echo(f"created run {name} at {folder.path}: a fork of {source} that goes on from {at} (round:stage)")
        click.echo(f"next: selfalign run {name}")
        return
    extra = list(sets)
    if model_name:
        extra.insert(0, f"model.name={config.toml_value(model_name)}")
    if note:
        extra.insert(0, f"run.note={config.toml_value(note)}")
    if config_file:
        cfg = config.load(config_file, sets=extra, recipe=recipe)
    else:
        cfg = config.build(sets=extra, recipe=recipe)
    models.resolve(cfg.model.name)  # an unknown model fails here, not rounds later
    prompts.check_config_files(cfg)  # and so does a missing or broken prompt file
    folder = runs.create(name, config.dumps(cfg), root=ctx.obj["runs_dir"], force=force, note=cfg.run.note,
                         version=__version__)
    click.echo(f"created run {name} at {folder.path} (recipe {cfg.run.recipe}, model {cfg.model.name})")
    click.echo(f"next: selfalign run {name}")


@cli.command("config")
@click.argument("name", required=False)
@click.option("--keys", is_flag=True, help="List the settings with their help, the ones a newcomer sets first; with "
              "NAME, the run's values beside the defaults.")
@click.pass_context
def config_cmd(ctx, name, keys):
    """Print a run's resolved config.toml, or the settings with --keys (every setting when no run is named)."""
    from selfalign import config, runs

    cfg = None
    if name:
        folder = runs.locate(name, ctx.obj["runs_dir"])
        cfg = config.load(folder.config_path)  # validate before printing
        if not keys:
            click.echo(folder.config_path.read_text(encoding="utf-8"), nl=False)
            return
    for group, rows in config.describe_keys(cfg):
        click.echo(f"# {group}")
        for key, value, default, text in rows:
            shown = value if value == default else f"{value}   (default {default})"
            click.echo(f"{key} = {shown}\n    {text}")
        click.echo()


@cli.group(cls=Group)
def models():
    """List and pull models."""


@models.command("list")
def models_list():
    """Registry models and whether they are pulled into the cache."""
    from selfalign import models as registry

    click.echo(f"cache: {registry.cache_dir()}")
    for entry in registry.REGISTRY.values():
        folder = registry.cache_dir() / entry.name
        if registry.is_pulled(entry.name):
            state = f"pulled, {registry.folder_size(folder) / 1e6:.0f} MB"
        else:
            state = "not pulled"
        click.echo(f"{entry.name:<16} {entry.params:>5}  {state:<18} {entry.description}")
    click.echo("Any Hugging Face id (org/name) or local model folder also works as --model.")


@models.command("pull")
@click.argument("name", default="smollm2-135m")
@click.option("--force", is_flag=True, help="Fetch again even if cached.")
def models_pull(name, force):
    """Fetch a registry model and cache a ready-to-load copy."""
    import time

    from selfalign import models as registry

    if registry.is_pulled(name) and not force and name in registry.REGISTRY:
        click.echo(f"{name} is already pulled at {registry.cache_dir() / name}")
        return
    started = time.perf_counter()
    with ProgressLine() as bar:
        path = registry.pull(name, bar.update, force=force)
    click.echo(f"pulled {name} to {path} in {time.perf_counter() - started:.1f} s")


@cli.command()
@click.argument("name", required=False)
@click.option("--model", "model_name", default=None, help="Serve this model instead of a run's policy.")
@click.option("--round", "round_k", type=int, default=None, help="Serve round k's adapter (default: the latest).")
@click.option("--corrector", "use_corrector", is_flag=True,
              help="Correct every reply with the run's newest trained corrector (Aligner); the reply as it came is "
              "kept in each choice's 'original' field.")
@click.option("--upstream-url", default=None, metavar="URL",
              help="Forward requests to this OpenAI-compatible server (e.g. http://127.0.0.1:8001/v1) and correct its "
              "replies; needs --upstream-model and --corrector-from.")
@click.option("--upstream-model", default=None, metavar="M", help="The upstream server's model.")
@click.option("--upstream-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the upstream server's API key, if it needs one.")
@click.option("--corrector-from", "corrector_from", default=None, metavar="RUN[:K]",
              help="Whose corrector corrects the replies: a run, and optionally the round of its corrector.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.pass_context
def serve(ctx, name, model_name, round_k, use_corrector, upstream_url, upstream_model, upstream_key_env,
          corrector_from, host, port):
    """Serve a run's policy (or any model) as an OpenAI-compatible endpoint, optionally behind a corrector."""
    from selfalign import serve as serving

    server, what = serving.build(ctx.obj["runs_dir"], name, model_name, round_k, use_corrector, upstream_url,
                                 upstream_model, upstream_key_env, corrector_from, host, port)
    click.echo(f"serving {what} at http://{host}:{server.server_port}/v1 (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
@click.argument("name")
@click.option("--round", "round_k", type=int, default=None,
              help="Use round k's corrector, trained on rounds 1..k (default: the newest round); trained now "
              "if missing.")
@click.option("--in", "in_path", default=None, metavar="FILE",
              help='JSONL of {"prompt", "answer"} (optionally "constraints") to correct.')
@click.option("--out", "out_path", default=None, metavar="FILE", help="Where the corrected JSONL goes (with --in).")
@click.option("--heldout", "split", type=click.Choice(["dev", "test"]), default=None,
              help="Measure the corrector on a round's held-out answers of this split: fix, break and no-op rates, "
              "and the paired gain of policy + corrector, + rule repair and both over the policy alone.")
@click.option("--answers-round", type=int, default=None, help="With --heldout: whose answers to correct (default: "
              "the corrector's round; 0 is the base model, another upstream policy).")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.pass_context
def correct(ctx, name, round_k, in_path, out_path, split, answers_round, fmt):
    """Aligner: train a run's corrector (a LoRA learning to rewrite answers, from the run's repaired copies, close
    pairs and clean answers) and rewrite answers with it. Without --in or --heldout it only trains."""
    from selfalign import runs
    from selfalign.correction import command

    folder = runs.locate(name, ctx.obj["runs_dir"])
    click.echo(command.correct(folder, round_k, in_path, out_path, split, answers_round, fmt))


class ProgressLine:
    """A one-line progress bar on stderr; plain lines per step when stderr is not a terminal."""

    def __init__(self, width: int = 30):
        self.width = width
        self.tty = sys.stderr.isatty()
        self.last_step = None

    def update(self, step: str, done: int, total: int) -> None:
        if step == "done":
            return
        fraction = done / total if total else 0.0
        if self.tty:
            filled = int(self.width * fraction)
            bar = "#" * filled + "-" * (self.width - filled)
            sys.stderr.write(f"\r[{bar}] {fraction:4.0%} {step:<40}")
            sys.stderr.flush()
        elif step != self.last_step:
            sys.stderr.write(f"{step}...\n")
        self.last_step = step

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc) -> None:
        if self.tty:
            sys.stderr.write("\n")


@cli.command()
@click.argument("name")
@click.option("--headless", is_flag=True, help="No UI: plain progress lines (for cron and scripts).")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Run at most this many more rounds.")
@click.option("--quiet", is_flag=True, help="No progress on stderr (the logs/ folder still gets everything).")
@click.pass_context
def run(ctx, name, headless, rounds, quiet):
    """Run (or resume) rounds of a run: the loop in the background with the UI on it, or --headless
    (one JSON line per finished round on stdout). Without a terminal it runs headless."""
    from selfalign import runs

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by accelerate launch or torchrun
        raise UsageError("`selfalign run` is one process (it owns the run and the generation engine); start it "
                         "plainly and set train.processes=N in config.toml: the train stage then runs under "
                         "`accelerate launch` with N processes")
    folder = runs.locate(name, ctx.obj["runs_dir"])
    if not headless and sys.stdin.isatty() and sys.stdout.isatty():
        from selfalign.tui import launch

        sys.exit(launch.run_with_ui(folder, rounds))
    from selfalign import loop

    sys.exit(loop.run(folder, rounds=rounds, quiet=quiet))


@cli.command()
@click.argument("name")
@click.pass_context
def watch(ctx, name):
    """Attach the UI to a running (for example cron-started) or finished run; the loop is not touched."""
    from selfalign import runs

    folder = runs.locate(name, ctx.obj["runs_dir"])
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(f"`selfalign watch` needs a terminal; use `selfalign status {name}` in scripts")
    from selfalign.tui import launch

    sys.exit(launch.watch(folder))


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def status(ctx, names, fmt):
    """State (idle, running, paused, hung, failed, stale), round, stage, heartbeat and metrics of runs."""
    import json

    from selfalign import runs
    from selfalign import status as run_status

    folders = [runs.locate(n, ctx.obj["runs_dir"]) for n in names] or runs.list_runs(ctx.obj["runs_dir"])
    statuses = [run_status.run_status(f) for f in folders]
    click.echo(json.dumps(statuses, indent=1) if fmt == "json" else run_status.render(statuses))


@cli.command("eval")
@click.argument("name")
@click.option("--round", "round_k", type=int, default=None, help="Round whose policy to evaluate (default: latest).")
@click.option("--prompts", "prompt_file", default=None, help="Your own JSONL prompt file (the held-out format).")
@click.option("--all", "every", is_flag=True, help="Every prompt of the held-out benchmark (or of --prompts), "
              "not only the loop's sample of eval.prompts.")
@click.option("--against", type=int, default=None, help="Also answer with this round's policy and print the paired "
              "gain over it with its 95% interval (default: round 0 when evaluating a later round).")
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True,
              help="dev: the benchmark the loop and every tuning choice read (eval.heldout_file); test: "
              "prompts/test.jsonl, answered whole, read by nothing else: report it, never tune on it.")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.pass_context
def eval_cmd(ctx, name, round_k, prompt_file, every, against, split, fmt):
    """Evaluate a round's policy on held-out prompts (or your own file): satisfaction with 95% intervals,
    per constraint type, and the paired gain over another round.

    Populations: satisfaction, its gain, length, distinct-2 and the degenerate and truncated shares are over
    the prompts with constraints; the unasked-form rates and the hollow and echo shares over every answer,
    and the unasked-form rates again over the prompts without constraints alone."""
    from selfalign import evaluation, runs
    from selfalign.process import hand_back_large_blocks

    folder = runs.locate(name, ctx.obj["runs_dir"])
    hand_back_large_blocks()  # the loop's setting: a whole-benchmark evaluation samples as many rows as a round
    if split == "test" and prompt_file:
        raise click.UsageError("--split test and --prompts name two prompt sets; give one")
    result = evaluation.evaluate_round(folder, round_k, prompt_file, every=every, split=split,
                                       against=against if against is not None else (0 if round_k != 0 else None))
    click.echo(evaluation.render_evaluation(folder, result, result.rounds[-1] if len(result.rounds) > 1 else None,
                                            fmt))


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["screen", "md", "json"]), default=None,
              help="md or json print without a terminal (CI reports, notebooks); default: the screen in a terminal.")
@click.option("--round", "round_k", type=int, default=None,
              help="Round whose held-out answers are joined (default: each run's latest evaluated round).")
@click.option("--all-settings", is_flag=True, help="List every setting, not only those that differ.")
@click.option("--answers", "answers_limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many held-out prompts to show (most disagreement first; 0 = all).")
@click.pass_context
def compare(ctx, names, fmt, round_k, all_settings, answers_limit):
    """Compare runs side by side: notes, settings, metrics per round, held-out answers by prompt, and each
    run's held-out gain over the first one, paired on the same prompts."""
    from selfalign import compare as comparing
    from selfalign import runs

    folders = [runs.locate(n, ctx.obj["runs_dir"]) for n in names]
    screen = fmt == "screen" or (fmt is None and sys.stdin.isatty() and sys.stdout.isatty())
    result = comparing.compare(folders, answers_round=round_k, all_settings=all_settings or screen,
                               answers_limit=0 if screen else answers_limit)
    if screen:
        from selfalign.tui.compare_app import CompareApp

        CompareApp(result).run()
        return
    click.echo(comparing.to_json(result) if fmt == "json" else comparing.to_markdown(result), nl=False)


@cli.command()
@click.argument("name")
@click.argument("text", required=False)
@click.pass_context
def note(ctx, name, text):
    """Show a run's note (why it exists), or replace it with TEXT."""
    from selfalign import runs
    from selfalign.store import open_store

    folder = runs.locate(name, ctx.obj["runs_dir"])
    with open_store(folder.db_path) as store:
        if text is None:
            click.echo(store.run_info().note or f"{name} has no note; set one with `selfalign note {name} TEXT`")
        else:
            store.set_note(text)


@cli.command()
@click.argument("name")
@click.option("--round", "round_k", type=int, default=None, help="Round to export (default: the latest trained).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder (default runs/NAME/export/K).")
@click.option("--merged", is_flag=True, help="Also write a merged model folder loadable by plain transformers.")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False), default=None,
              help="Instead: write every train step and round metric as TensorBoard events into this empty folder.")
@click.pass_context
def export(ctx, name, round_k, out, merged, tensorboard_dir):
    """Export a round's pairs (TRL preference JSONL), SFT set and adapter; or the run's metrics for TensorBoard."""
    from selfalign import runs

    folder = runs.locate(name, ctx.obj["runs_dir"])
    if tensorboard_dir:
        from selfalign import report

        click.echo(f"TensorBoard events in {report.export_tensorboard(folder, tensorboard_dir)}; "
                   f"open them with: tensorboard --logdir {tensorboard_dir}")
        return
    from selfalign import export as exporter

    target = exporter.export_round(folder, round_k, out, merged)
    click.echo(f"exported to {target}")


def main() -> None:
    cli(prog_name="selfalign")
