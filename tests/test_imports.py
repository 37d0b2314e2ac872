"""Import hygiene: the core never imports textual, nothing heavy happens at import time, stages import
no other stage."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = ["selfalign", "selfalign.cli", "selfalign.config", "selfalign.errors", "selfalign.models", "selfalign.runs",
        "selfalign.store", "selfalign.store.rows", "selfalign.store.schema", "selfalign.loop", "selfalign.status",
        "selfalign.stages", "selfalign.export", "selfalign.scoring", "selfalign.verifiers", "selfalign.prompts",
        "selfalign.tui", "selfalign.tui.feed", "selfalign.process", "selfalign.evaluation", "selfalign.judging",
        "selfalign.engines.base", "selfalign.engines.select"]
PACKAGE = Path(__file__).resolve().parent.parent / "selfalign"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_textual_and_no_torch(module):
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in ('textual', 'torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_stages_import_no_other_stage():
    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    assert {"instruct", "generate", "judge", "pairs", "train", "evaluate"} <= stages
    for stem in stages:
        others = {f"selfalign.stages.{s}" for s in stages - {stem}}
        assert not imported_modules(PACKAGE / "stages" / f"{stem}.py") & others, f"stages/{stem}.py imports a stage"


def test_no_module_is_over_400_lines():
    """Small modules: a file past 400 lines holds more than one room's worth."""
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long
