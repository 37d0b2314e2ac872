"""Import hygiene: the core never imports textual, and nothing heavy happens at import time."""

import subprocess
import sys

import pytest

CORE = ["selfalign", "selfalign.cli", "selfalign.config", "selfalign.errors", "selfalign.models", "selfalign.runs",
        "selfalign.store", "selfalign.store.rows", "selfalign.store.schema", "selfalign.loop", "selfalign.status",
        "selfalign.stages", "selfalign.export", "selfalign.scoring", "selfalign.verifiers", "selfalign.prompts",
        "selfalign.tui", "selfalign.tui.feed"]


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_textual_and_no_torch(module):
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in ('textual', 'torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
