"""The data half of a round on the embedded SmolLM2-135M (slow: about a minute on 2 CPU cores)."""

import pytest

from selfalign import config, runs
from selfalign.engines.transformers_engine import TransformersEngine
from selfalign.stages import StageContext
from selfalign.stages import generate as generate_stage
from selfalign.stages import instruct as instruct_stage
from selfalign.store import open_store


@pytest.mark.slow
def test_instruct_and_generate_on_the_embedded_model(runs_root):
    cfg = config.build(sets=["instruct.prompts_per_round=4", "instruct.seed_prompts_per_round=4",
                             "generate.samples_per_prompt=2", "generate.max_new_tokens=48"])
    folder = runs.create("embedded", config.dumps(cfg))
    engine = TransformersEngine.load(cfg.model.name, device="cpu", batch_size=cfg.generate.batch_size,
                                     max_context=cfg.model.max_context)
    with open_store(folder.db_path) as store:
        ctx = StageContext(cfg, store, engine, round=1, run_dir=folder.path)
        instruct_stage.run(ctx)
        made = store.prompts(split="train", round=1, source="self")
        assert len(made) >= 2, [e.data for e in store.events()]  # the real model writes usable instructions
        assert all(len(p.text.split()) >= 4 for p in made)
        generate_stage.run(ctx)
        responses = store.responses(round=1)
        assert len(responses) == 2 * store.count_prompts(split="train", round=1)
        nonempty = [r for r in responses if r.text.strip()]
        assert len(nonempty) >= 0.9 * len(responses)
        assert sum(len(r.text.split()) for r in nonempty) / len(nonempty) > 5  # sentences, not fragments
        assert all(r.mean_logprob is not None and -10 < r.mean_logprob < 0 for r in nonempty)


@pytest.mark.slow
def test_one_round_of_the_default_recipe_on_the_embedded_model(runs_root, capsys):
    """The whole default recipe, shrunk: instruct -> generate -> judge -> pairs -> train -> evaluate."""
    import json

    from selfalign import loop

    cfg = config.build(sets=["run.rounds=1", "instruct.prompts_per_round=4", "instruct.seed_prompts_per_round=4",
                             "generate.max_new_tokens=48", "eval.prompts=4",
                             "eval.max_new_tokens=48", "train.epochs=1"])
    folder = runs.create("default-round", config.dumps(cfg))
    assert loop.run(folder, quiet=True) == 0
    summary = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")][-1]
    metrics = summary["metrics"]
    with capsys.disabled():  # the judge health of the real model, for the reader of the test log
        print("\nembedded-model round 1:", json.dumps({k: v for k, v in metrics.items()
                                                      if k.startswith(("judge/", "eval/", "pairs/"))}, indent=1))
    # the default judges by the verifiers and weighs likelihood by its agreement with them (no rubric judge)
    for name in ("judge/likelihood_verifier_agreement", "pairs/weight_likelihood", "eval/csr_instruction",
                 "eval/csr_prompt_low", "eval/degenerate_rate", "eval/length_mean", "pairs/count"):
        assert name in metrics
    assert "judge/parse_fail_rate" not in metrics
    with open_store(folder.db_path) as store:
        assert store.round(1).status == "done"
        if store.pairs(1):
            assert folder.adapter_dir(1).is_dir() and store.train_steps(1)
