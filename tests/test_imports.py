"""Import hygiene: the core never imports textual, nothing heavy happens at import time, stages import
no other stage."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = ["selfalign", "selfalign.cli", "selfalign.config", "selfalign.errors", "selfalign.models", "selfalign.runs",
        "selfalign.store", "selfalign.store.rows", "selfalign.store.schema", "selfalign.loop", "selfalign.status",
        "selfalign.stages", "selfalign.export", "selfalign.verifiers", "selfalign.prompts",
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


def test_stages_holds_the_stages_and_they_import_no_other_stage():
    """Modules are split by concept: stages/ holds exactly the stages a round runs (stages.STAGES), and a
    stage never calls another (the loop decides the order)."""
    from selfalign.stages import STAGES

    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    assert stages == set(STAGES)
    for stem in stages:
        others = {f"selfalign.stages.{s}" for s in stages - {stem}}
        assert not imported_modules(PACKAGE / "stages" / f"{stem}.py") & others, f"stages/{stem}.py imports a stage"
