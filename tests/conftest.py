"""Shared fixtures: temp home and runs folders for every test, one shared model cache, the tiny model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_model.py

from selfalign import models  # noqa: E402  (light: no torch at import)

# The embedded model is pulled once per machine, not once per test run: remember the real
# cache before each test points SELFALIGN_HOME at a temp folder.
SHARED_MODEL_CACHE = str(models.cache_dir())
# No test may reach the Hugging Face hub; huggingface_hub reads this once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SELFALIGN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SELFALIGN_MODEL_CACHE", SHARED_MODEL_CACHE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    import tiny_model

    return tiny_model.build(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def runs_root(isolated_home) -> Path:
    return Path(os.environ["SELFALIGN_RUNS"])


TINY_SETS = [
    "instruct.prompts_per_round=6", "instruct.seed_prompts_per_round=4", "instruct.max_new_tokens=24",
    "generate.samples_per_prompt=3", "generate.max_new_tokens=12", "generate.batch_size=8",
    "model.max_context=512",
]


@pytest.fixture
def tiny_run(runs_root, tiny_model_dir):
    """A real run folder on the tiny model, sized for seconds: (folder, config, store, engine)."""
    from selfalign import config, runs
    from selfalign.engines.transformers_engine import TransformersEngine
    from selfalign.store import open_store

    def make(name="tiny", sets=()):
        cfg = config.build(sets=[f"model.name={tiny_model_dir}", *TINY_SETS, *sets])
        folder = runs.create(name, config.dumps(cfg))
        store = open_store(folder.db_path)
        engine = TransformersEngine.load(cfg.model.name, device="cpu", batch_size=cfg.generate.batch_size,
                                         max_context=cfg.model.max_context)
        return folder, cfg, store, engine

    return make
