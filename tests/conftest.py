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
