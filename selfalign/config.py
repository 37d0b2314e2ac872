"""Configuration: resolving, validating, loading and saving a Config (its sections live in config_sections.py).

One `Config` serves the headless loop, the TUI and every command. The defaults are the
embedded demo (SmolLM2-135M on 2 CPU cores): one round must finish in minutes.
Resolution order: field defaults < recipe defaults < TOML file < `--set section.key=value`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any

from selfalign.config_sections import MARGIN_LOSSES, PAIR_LOSSES, RECIPE_DEFAULTS, RECIPES, SECTIONS, Config
from selfalign.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# ---------------------------------------------------------------- building and validation


def build(data: dict | None = None, *, sets: list[str] | tuple[str, ...] = (), recipe: str | None = None,
          source: str = "config", text: str | None = None) -> Config:
    """Resolve a Config from recipe defaults, a parsed TOML dict and `--set` overrides.

    `source` and `text` name the file the dict came from, so errors can cite its lines.
    """
    data = _legacy(data or {})
    overrides = [parse_set(s) for s in sets]
    for dotted, _ in overrides:
        _check_key(dotted, source="--set")
    _check_unknown(data, source, text)
    chosen = recipe or data.get("run", {}).get("recipe") or "self-reward"
    for dotted, value in overrides:
        if dotted == "run.recipe":
            chosen = value
    if chosen not in RECIPES:
        raise ConfigError(f"run.recipe = {chosen!r} is not a recipe; use one of {', '.join(RECIPES)}")

    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for dotted, value in RECIPE_DEFAULTS[chosen].items():
        section, key = dotted.split(".")
        values[section][key] = (value, f"recipe {chosen}")
    for section, table in data.items():
        for key, value in table.items():
            values[section][key] = (value, _where(source, text, section, key))
    for dotted, value in overrides:
        section, key = dotted.split(".")
        values[section][key] = (value, f"--set {dotted}")
    values["run"]["recipe"] = (chosen, values["run"].get("recipe", (chosen, "--recipe"))[1])

    sections = {}
    for name, cls in SECTIONS.items():
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values[name]:
                value, where = values[name][f.name]
                kwargs[f.name] = _coerce(name, f, value, where)
        sections[name] = cls(**kwargs)
    _yield_defaults(sections, values)
    config = Config(**sections)
    _check_relations(config)
    return config


def load(path: str | Path, *, sets: list[str] | tuple[str, ...] = (), recipe: str | None = None) -> Config:
    """Read a TOML file (a run's config.toml or a user's own) into a validated Config."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save it as UTF-8 TOML") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix that line or delete the file "
                          "and run `selfalign init` again") from None
    return build(data, sets=sets, recipe=recipe, source=str(path), text=text)


class Watched:
    """A config file read again only when it changed (its mtime or size): for pollers such as the UI's
    feed, which would otherwise parse and validate it twice a second."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._config: Config | None = None

    def get(self) -> Config:
        try:
            st = self.path.stat()
            seen = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if self._config is None or seen is None or seen != self._seen:
            self._config = load(self.path)  # a missing or broken file raises as load() does
            self._seen = seen
        return self._config


def parse_set(item: str) -> tuple[str, Any]:
    """`section.key=value`; the value is read as TOML and, failing that, as a bare string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} has no '='; write it as --set section.key=value")
    dotted, raw = item.split("=", 1)
    dotted = dotted.strip()
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return dotted, value


def _check_key(dotted: str, source: str) -> None:
    if dotted.count(".") != 1:
        raise ConfigError(f"{source} key {dotted!r} must be section.key, e.g. generate.temperature")
    section, key = dotted.split(".")
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown section {section!r}{_suggest(section, SECTIONS)}; "
                          f"sections are {', '.join(SECTIONS)}")
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if key not in names:
        raise ConfigError(f"{source}: unknown key {section}.{key}{_suggest(key, names)}; "
                          f"`selfalign config --keys` lists them all")


def _check_unknown(data: dict, source: str, text: str | None) -> None:
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{_where(source, text, None, section)}: {section!r} must be a [section] "
                              f"table; sections are {', '.join(SECTIONS)}")
        if section not in SECTIONS:
            raise ConfigError(f"{_where(source, text, section, None)}: unknown section [{section}]"
                              f"{_suggest(section, SECTIONS)}; sections are {', '.join(SECTIONS)}")
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        for key in table:
            if key not in names:
                raise ConfigError(f"{_where(source, text, section, key)}: unknown key {section}.{key}"
                                  f"{_suggest(key, names)}")


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(source: str, text: str | None, section: str | None, key: str | None) -> str:
    """`file line N` for a key, found by scanning the text (tomllib keeps no positions)."""
    line = _find_line(text, section, key) if text else None
    return f"{source} line {line}" if line else source


def _find_line(text: str, section: str | None, key: str | None) -> int | None:
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]\s]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if key and current == section and re.match(rf"^\"?{re.escape(key)}\"?\s*=", stripped):
            return number
    return None


def _coerce(section: str, f: dataclasses.Field, value: Any, where: str) -> Any:
    """Check one value's type and range; return it in the field's type."""
    hint = typing.get_type_hints(SECTIONS[section])[f.name]
    name = f"{section}.{f.name}"
    meta = f.metadata

    def bad(allowed: str) -> ConfigError:
        return ConfigError(f"{where}: {name} = {value!r} is not allowed; {allowed}")

    if isinstance(value, bool) and meta.get("bool_as"):
        value = meta["bool_as"][value]
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("use true or false")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("use a whole number")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("use a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            choices = meta.get("choices")
            raise bad(f"use one of {', '.join(choices)}" if choices else "use a quoted string")
    elif typing.get_origin(hint) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad('use a list of strings, e.g. ["a", "b"]')
    choices = meta.get("choices")
    if choices and any(v not in choices for v in (value if isinstance(value, list) else [value])):
        raise bad(f"use {'a list of ' if isinstance(value, list) else ''}one of {', '.join(choices)}")
    low, high = meta.get("min"), meta.get("max")
    if low is not None and (value < low or (meta.get("min_exclusive") and value == low)):
        raise bad(f"it must be {'>' if meta.get('min_exclusive') else '>='} {low}")
    if high is not None and value > high:
        raise bad(f"it must be <= {high}")
    return value


# Keys whose default depends on other settings (resolved in _yield_defaults): `changes` leaves them out where
# they hold the value the other settings give them, so `init --set` and `init --fork --set` resolve alike.
DERIVED = ("train.length_margin",)


def _yield_defaults(sections: dict, values: dict) -> None:
    """Defaults that only make sense beside another default give way when that one is set: the length term
    to a loss without a margin or to ln-dpo (whose per-token mean already takes length out, and whose beta
    is on another scale). Set explicitly, they are checked as usual."""
    train = sections["train"]
    if "length_margin" not in values["train"] and (train.loss not in MARGIN_LOSSES or train.loss == "ln-dpo"):
        sections["train"] = dataclasses.replace(train, length_margin=0.0)


# Keys earlier versions wrote into config.toml, read as what replaced them (a run folder stays loadable):
# the two tie-break booleans become pairs.tie_break; tuning knobs that became constants are dropped; an empty
# instruct.bank is dropped (the key left with its code: seed_file with prompts_per_round = 0 does its job).
RETIRED = {"controller": ("curriculum_floor", "curriculum_ceiling", "rewrite_sample")}


# pairs keys every stored run config has had, and the gates that were off until 2026-12-07 (issue 33, row hollow3)
OLDER_PAIRS_KEYS = ("rule", "min_margin", "max_pairs_per_prompt", "quality_gate", "repair", "sft_min_score")
GATES_TURNED_ON = ("unasked_form_gate", "mirror", "hollow_gate")


def _legacy(data: dict) -> dict:
    instruct = data.get("instruct")
    if isinstance(instruct, dict) and "bank" in instruct:
        if instruct["bank"]:  # dropping it would turn the run's training prompts into written ones unnoticed
            raise ConfigError(f"instruct.bank = {instruct['bank']!r} was removed; set instruct.seed_file to that "
                              "file, instruct.seed_prompts_per_round to the tasks per round and "
                              "instruct.prompts_per_round = 0")
        data = {**data, "instruct": {k: v for k, v in instruct.items() if k != "bank"}}
    for section, keys in RETIRED.items():
        if isinstance(data.get(section), dict) and set(keys) & set(data[section]):
            data = {**data, section: {k: v for k, v in data[section].items() if k not in keys}}
    pairs = data.get("pairs")
    if isinstance(pairs, dict) and set(OLDER_PAIRS_KEYS) <= set(pairs):  # a run's config.toml (every key listed)
        # written before these gates were on by default: a resumed run keeps the recipe it started with
        data = {**data, "pairs": {**{key: False for key in GATES_TURNED_ON}, **pairs}}
        pairs = data["pairs"]
    if not isinstance(pairs, dict) or not {"prefer_shorter", "prefer_longer"} & set(pairs):
        return data
    pairs = dict(pairs)
    shorter, longer = pairs.pop("prefer_shorter", False), pairs.pop("prefer_longer", False)
    pairs.setdefault("tie_break", "shorter" if shorter else "longer" if longer else "none")
    return {**data, "pairs": pairs}


def _check_relations(config: Config) -> None:
    """Rules that involve more than one field."""
    if config.train.loss in PAIR_LOSSES and config.generate.samples_per_prompt < 2:
        raise ConfigError(
            f"generate.samples_per_prompt = {config.generate.samples_per_prompt} cannot make preference "
            f"pairs for train.loss = {config.train.loss!r}; set it to 2 or more (4 is the default)")
    if config.train.length_margin and config.train.loss not in MARGIN_LOSSES:
        raise ConfigError(f"train.length_margin = {config.train.length_margin} works with train.loss dpo, ln-dpo "
                          f"or ld-dpo, not {config.train.loss!r}; set train.length_margin = 0 or change the loss")
    if config.instruct.min_words > config.instruct.max_words:
        raise ConfigError(f"instruct.min_words ({config.instruct.min_words}) is above instruct.max_words "
                          f"({config.instruct.max_words}); lower min_words or raise max_words")
    if config.judge.weight_blackbox > 0 and not config.judge.blackbox_url:
        raise ConfigError(
            f"judge.weight_blackbox = {config.judge.weight_blackbox} but judge.blackbox_url is empty; "
            "set --set judge.blackbox_url=http://HOST:PORT/v1 (any OpenAI-compatible server)")
    if config.generate.engine == "http" and not config.generate.http_url:
        raise ConfigError("generate.engine = \"http\" but generate.http_url is empty; set --set "
                          "generate.http_url=http://HOST:PORT/v1 (for example `vllm serve MODEL --enable-lora`)")
    weights = [config.judge.weight_rubric, config.judge.weight_verifiers,
               config.judge.weight_likelihood, config.judge.weight_blackbox]
    if config.train.loss != "sft" and sum(weights) == 0:
        raise ConfigError("every judge.weight_* is 0, so responses cannot be ranked; give one a weight > 0")


# ---------------------------------------------------------------- TOML output


def flat(config: Config) -> dict[str, Any]:
    """Every setting as 'section.key' -> value."""
    return {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}


def changes(config: Config) -> list[str]:
    """The settings that differ from the defaults, as --set items (the note aside): the recipe when it is not
    the default one, then what differs from that recipe's own defaults. A derived key (DERIVED) is listed
    only where it differs from what the other settings give it, so rebuilding from these items with more
    --set on top resolves as `init` would."""
    defaults = flat(build(recipe=config.run.recipe))
    recipe = [] if config.run.recipe == build().run.recipe else [f"run.recipe={toml_value(config.run.recipe)}"]
    values = flat(config)
    primary = [f"{key}={toml_value(value)}" for key, value in values.items()
               if value != defaults.get(key) and key != "run.note" and key not in DERIVED]
    given = flat(build(recipe=config.run.recipe, sets=primary))
    return recipe + primary + [f"{key}={toml_value(values[key])}" for key in DERIVED if values[key] != given[key]]


def dumps(config: Config) -> str:
    """TOML text of the whole resolved config, each key preceded by its help as a comment."""
    out = ["# selfalign run configuration, resolved when the run was created.",
           "# Every key is listed; `selfalign init --set section.key=value` changes one.", ""]
    for name, cls in SECTIONS.items():
        out.append(f"[{name}]")
        section = getattr(config, name)
        for f in dataclasses.fields(cls):
            out.append(f"# {f.metadata['help']}")
            out.append(f"{f.name} = {toml_value(getattr(section, f.name))}")
        out.append("")
    return "\n".join(out)


def toml_value(value: Any) -> str:
    """A value as TOML text (what config.toml, `--set` and the controller's overrides are written with)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def save(config: Config, path: str | Path) -> None:
    """Write config.toml atomically: a killed process never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(config), encoding="utf-8")
    tmp.replace(path)


# What a newcomer sets first (`selfalign config --keys` lists these before the rest, section by section).
FIRST_KEYS = ("run.recipe", "run.rounds", "run.seed", "run.note", "model.name", "instruct.prompts_per_round",
              "generate.engine", "generate.samples_per_prompt", "generate.max_new_tokens", "judge.blackbox_url",
              "judge.blackbox_model", "train.learning_rate", "train.epochs", "eval.prompts", "report.to")


def describe_keys(config: Config | None = None) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """(group, [(section.key, value, default, help)]) for `selfalign config --keys`: the keys a newcomer sets
    first, then every other key by section. `value` is the run's when a config is given, else the default."""
    defaults = build(recipe=config.run.recipe) if config else Config()
    config = config or defaults
    rows = {f"{name}.{f.name}": (f"{name}.{f.name}", toml_value(getattr(getattr(config, name), f.name)),
                                 toml_value(getattr(getattr(defaults, name), f.name)), f.metadata["help"])
            for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    groups = [("start here", [rows[key] for key in FIRST_KEYS])]
    for name in SECTIONS:
        rest = [row for key, row in rows.items() if key.startswith(name + ".") and key not in FIRST_KEYS]
        if rest:
            groups.append((f"[{name}]", rest))
    return groups
