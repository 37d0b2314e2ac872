"""Load and render the templates and prompt files in prompts/.

A template is text with `{{name}}` placeholders and optional TOML front matter between two
`+++` lines (metadata such as stop strings). A bare file name is looked up in the run's own
`prompts/` folder first, then in the project's; a path is used as it is.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfalign.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The repo's prompts/ (a checkout or editable install); a wheel carries them as selfalign/_prompts.
_REPO_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
PROMPTS_DIR = _REPO_PROMPTS if _REPO_PROMPTS.is_dir() else Path(__file__).resolve().parent / "_prompts"
PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def find(name: str, run_dir: str | Path | None = None) -> Path:
    """Path of a prompt file: a path as given, else <run>/prompts/<name>, else prompts/<name>."""
    direct = Path(name).expanduser()
    if direct.is_absolute() or len(direct.parts) > 1:
        if direct.is_file():
            return direct
        raise ConfigError(f"prompt file {name} does not exist; check the path in config.toml")
    for folder in ([Path(run_dir) / "prompts"] if run_dir else []) + [PROMPTS_DIR]:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"prompt file {name!r} is in neither the run's prompts/ folder nor {PROMPTS_DIR}; "
                      "check the name in config.toml")


@dataclass
class Template:
    path: Path
    body: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def placeholders(self) -> set[str]:
        return set(PLACEHOLDER_RE.findall(self.body))

    @property
    def stop(self) -> list[str]:
        return list(self.meta.get("stop", []))

    def render(self, **values: Any) -> str:
        missing = self.placeholders - set(values)
        if missing:
            raise ConfigError(f"template {self.path} needs a value for {{{{{sorted(missing)[0]}}}}}; "
                              "this is a bug in the stage that renders it")
        return PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), self.body)


def load_template(name: str, required: tuple[str, ...] = (), run_dir: str | Path | None = None) -> Template:
    """Read a template and check that it has every placeholder the caller will fill."""
    path = find(name, run_dir)
    text = path.read_text(encoding="utf-8")
    meta: dict[str, Any] = {}
    if text.startswith("+++"):
        end = text.find("\n+++", 3)
        if end < 0:
            raise ConfigError(f"template {path} opens its front matter with +++ but never closes it; "
                              "add a line with +++ after it")
        try:
            meta = tomllib.loads(text[3:end])
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"template {path} has invalid TOML front matter ({exc}); fix it") from None
        text = text[end + 4:].lstrip("\n")
    template = Template(path, text, meta)
    for name_ in required:
        if name_ not in template.placeholders:
            raise ConfigError(f"template {path} has no {{{{{name_}}}}} placeholder; add it where the "
                              f"{name_} should go")
    return template


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {number} is not valid JSON ({exc.msg}); fix or delete that line") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path} line {number} must be a JSON object; fix or delete that line")
        rows.append((number, row))
    return rows


def read_seed_tasks(name: str, run_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Seed instructions: one {"instruction": str, "category": str?} per line."""
    path = find(name, run_dir)
    tasks = []
    for number, row in _jsonl(path):
        text = row.get("instruction")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f'{path} line {number} has no "instruction" text; each line needs '
                              '{"instruction": "..."}')
        tasks.append({"instruction": text.strip(), "category": str(row.get("category", ""))})
    if not tasks:
        raise ConfigError(f"{path} holds no seed tasks; add at least one line")
    return tasks


def read_prompt_file(name: str, run_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Evaluation prompts: {"prompt": str, "constraints": [{"id", "params"}], "category": str?} per line."""
    from selfalign import verifiers

    path = find(name, run_dir)
    prompts = []
    for number, row in _jsonl(path):
        text = row.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f'{path} line {number} has no "prompt" text; each line needs {{"prompt": "..."}}')
        try:
            constraints = [verifiers.validate(c) for c in row.get("constraints", [])]
        except ValueError as exc:
            raise ConfigError(f"{path} line {number}: {exc}") from None
        prompts.append({"prompt": text.strip(), "constraints": constraints, "category": str(row.get("category", ""))})
    if not prompts:
        raise ConfigError(f"{path} holds no prompts; add at least one line")
    return prompts


def check_config_files(cfg) -> None:
    """Read every prompt file a configuration names, so a missing or broken one fails at `init` with the key
    to change, not rounds later after the model has loaded."""
    checks = [("eval.heldout_file", cfg.eval.heldout_file, read_prompt_file),
              ("instruct.seed_file", cfg.instruct.seed_file, read_seed_tasks),
              ("instruct.template", cfg.instruct.template, lambda n: load_template(n, ("demos",))),
              ("judge.rubric_prompt", cfg.judge.rubric_prompt, lambda n: load_template(n, ("instruction", "response"))),
              ("generate.urial_template", cfg.generate.urial_template, lambda n: load_template(n, ("query",)))]
    for key, name, read in checks:
        if not name:
            continue  # an optional file left empty
        try:
            read(name)
        except ConfigError as exc:
            raise ConfigError(f"{key} = {name!r}: {exc}") from None
