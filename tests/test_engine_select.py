"""Engine choice (auto, vllm, http) and the http policy path against real servers on 127.0.0.1."""

import importlib.util
import json

import pytest
from test_http import Scripted
from test_loop import LOOP_SETS

from selfalign import config, loop, runs
from selfalign.engines import select
from selfalign.engines.base import GenerationRequest
from selfalign.engines.http_engine import HttpClient, HttpEngine
from selfalign.errors import ConfigError
from selfalign.store import open_store

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="this machine has vllm")
def test_auto_falls_back_to_transformers_and_says_why():
    name, why = select.choose(config.build())
    assert name == "transformers" and "vllm is not installed" in why
    with pytest.raises(ConfigError, match="generate.engine = \"vllm\" but vllm is not installed"):
        select.choose(config.build(sets=["generate.engine=vllm"]))


def test_auto_keeps_our_engine_where_vllm_has_not_run_and_says_how_to_choose_it(monkeypatch):
    """vLLM's CUDA path has never run in this project, so auto does not pick it even with CUDA present."""
    from selfalign.engines import vllm_engine

    monkeypatch.setattr(vllm_engine, "available", lambda cpu=False: (True, "vllm with 1 CUDA device(s)"))
    name, why = select.choose(config.build())
    assert name == "transformers" and 'generate.engine = "vllm"' in why and "CUDA" in why


def test_http_engine_needs_a_url():
    with pytest.raises(ConfigError, match="generate.http_url is empty"):
        config.build(sets=["generate.engine=http"])


def test_http_policy_reads_logprobs_and_loads_each_rounds_adapter():
    reply = {"choices": [{"message": {"content": "a b"}, "finish_reason": "stop",
                          "logprobs": {"content": [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -3.0}]}},
                         {"message": {"content": "c"}, "finish_reason": "length",
                          "logprobs": {"content": [{"token": "c", "logprob": -0.5}]}}]}
    server = Scripted([("raw", json.dumps(reply)), ("raw", "Success: LoRA adapter loaded"),
                       ("raw", json.dumps(reply))])
    try:
        engine = HttpEngine(HttpClient(server.url, "base-model", retries=0))
        request = GenerationRequest(key=7, messages=[{"role": "user", "content": "Hi"}], n=2, seed=3)
        first = engine.generate([request])
        assert [r.mean_logprob for r in first] == [-2.0, -0.5]
        assert [r.finish_reason for r in first] == ["stop", "length"]
        engine.generate([request], adapter="/runs/x/rounds/1/adapter")
        engine.generate([], adapter="/runs/x/rounds/1/adapter")  # the same adapter is not loaded twice
        (p1, _, b1), (p2, _, b2), (p3, _, b3) = server.received
        assert p1.endswith("/chat/completions") and b1["model"] == "base-model" and b1["logprobs"] is True
        assert p2.endswith("/load_lora_adapter") and b2["lora_path"] == "/runs/x/rounds/1/adapter"
        assert b3["model"] == b2["lora_name"] != "base-model"
    finally:
        server.close()


def test_a_round_through_an_http_policy_server(tiny_model_dir, runs_root):
    """generate.engine = http against `selfalign serve` on the tiny model: the loop samples, judges and
    evaluates through HTTP, and trains locally on the same model."""
    import threading

    from selfalign.engines.transformers_engine import TransformersEngine
    from selfalign.serve import make_server

    served = TransformersEngine.load(str(tiny_model_dir), device="cpu", batch_size=8, max_context=768)
    server = make_server(served, "tiny", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = config.build(sets=[f"model.name={tiny_model_dir}", *LOOP_SETS, "run.rounds=1", "generate.engine=http",
                                 f"generate.http_url=http://127.0.0.1:{server.server_port}/v1",
                                 "generate.http_model=tiny", "generate.http_load_adapters=false",
                                 "judge.weight_likelihood=0"])
        folder = runs.create("via-http", config.dumps(cfg))
        assert loop.run(folder, quiet=True) == 0
        with open_store(folder.db_path) as store:
            assert store.count_responses(round=1) > 0 and store.round(1).status == "done"
            assert any(e.data.get("engine") == "http" for e in store.events())
    finally:
        server.shutdown()
        server.server_close()
