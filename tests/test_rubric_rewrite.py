"""The controller's rubric rewrite: criteria parsing, the decision it feeds, and a trial against a real
SQLite run and a real HTTP policy server whose judge follows whichever rubric it is sent."""

import re

import pytest
from test_http import Scripted

from selfalign import config, controller, prompts, rubric_rewrite, runs, verifiers
from selfalign.engines.http_engine import HttpClient, HttpEngine
from selfalign.stages import StageContext
from selfalign.stages import judge as judge_stage
from selfalign.store import open_store
from selfalign.store.rows import NewJudgement, NewPrompt, NewResponse

NEW_CRITERIA = ["MARK-NEW The answer follows every explicit instruction of the request.",
                "The answer is in lowercase when asked.", "The answer avoids commas when asked.",
                "The answer is about the request.", "The answer is short and clear."]
CONSTRAINTS = [{"id": "lowercase", "params": {}}, {"id": "no_commas", "params": {}}]
ANSWERS = ["all lowercase and no commas here", "Mixed Case, With Commas", "lowercase, but with a comma"]


def test_criteria_are_read_and_replaced_one_for_one():
    body = prompts.load_template("judge_additive5.txt").body
    old = rubric_rewrite.criteria(body)
    assert len(old) == 5 and old[0].startswith("The response is about the request")
    new = rubric_rewrite.with_criteria(body, NEW_CRITERIA)
    assert rubric_rewrite.criteria(new) == NEW_CRITERIA
    assert "{{instruction}}" in new and "{{response}}" in new and "Score: N" in new
    assert rubric_rewrite.criteria("1) first\n  2. second\nnot 3 this\n") == ["first", "second"]


def unhealthy():
    return {"judge/collapse": 1.0, "judge/score_std": 0.0, "judge/rubric_verifier_agreement": 0.3}


def test_a_kept_rewrite_replaces_the_rubric_and_a_discarded_one_switches_it_off():
    cfg = config.build(sets=["controller.rewrite_rubric=true", "judge.rubric=additive5"])
    assert controller.wants_rubric_rewrite(cfg, cfg, unhealthy())
    assert not controller.wants_rubric_rewrite(cfg, cfg, {"judge/rubric_verifier_agreement": 0.9})
    off = config.build(sets=["controller.rewrite_rubric=false", "judge.rubric=additive5"])
    assert not controller.wants_rubric_rewrite(off, off, unhealthy())
    isheep = config.build(sets=["controller.rewrite_rubric=true"], recipe="isheep")
    assert not controller.wants_rubric_rewrite(isheep, isheep, unhealthy())

    metrics = {0: {"eval/csr_instruction": 0.4}, 1: {"eval/csr_instruction": 0.4} | unhealthy()}
    kept = rubric_rewrite.Trial(True, "kept as prompts/judge_additive5.r1.txt",
                                {"overrides": {"judge.rubric_prompt": "judge_additive5.r1.txt"}})
    decisions = controller.decide(cfg, cfg, 1, metrics, [0], {}, 0.0, kept)
    judge = {d.kind: d for d in decisions}["judge"]
    assert judge.data["overrides"] == {"judge.rubric_prompt": "judge_additive5.r1.txt"}
    assert "kept as prompts/judge_additive5.r1.txt" in judge.reason
    plan = controller.plan(cfg, decisions, {}, [0, 1], {0: 0.4, 1: 0.4}, [1])
    assert plan.overrides["judge.rubric_prompt"] == "judge_additive5.r1.txt"  # the rubric stays on, rewritten
    assert "judge.rubric" not in plan.overrides
    discarded = rubric_rewrite.Trial(False, "the policy's rewrite had 2 numbered criteria: discarded", {})
    judge = {d.kind: d for d in controller.decide(cfg, cfg, 1, metrics, [0], {}, 0.0, discarded)}["judge"]
    assert judge.data["overrides"]["judge.rubric"] == "none" and "discarded" in judge.reason


class Policy(Scripted):
    """A real OpenAI-compatible server: answers the rewrite request with `criteria`; as a judge it scores
    by the instruction checks when the rubric it is sent carries MARK-NEW, else gives 3."""

    def __init__(self, criteria):
        def respond(body):
            text = body["messages"][-1]["content"]
            if "Write a better checklist" in text:
                return "\n".join(f"{i}. {c}" for i, c in enumerate(criteria, 1))
            if "MARK-NEW" in text:
                answer = re.search(r"Response:\n(.*?)\n\nExplain", text, re.S).group(1)
                met = verifiers.check_all(CONSTRAINTS, answer)
                return f"It meets {sum(met.values())} checks. Score: {2 * sum(met.values())}"
            return "Fine. Score: 3"

        super().__init__(respond=respond)
        self.engine = HttpEngine(HttpClient(self.url, "policy"), load_adapters=False)

    @property
    def texts(self):
        """The last message of every request received, in order."""
        return [body["messages"][-1]["content"] for _, _, body in self.received]


def round_with(store, k, old_scores=None):
    """Four prompts with two constraints, three answers each, verified, and the old rubric's scores."""
    store.start_round(k, None)
    ids = store.add_prompts([NewPrompt(f"Describe place {k}-{i}.", "self", constraints=CONSTRAINTS, round=k)
                             for i in range(4)])
    for pid in ids:
        for index, answer in enumerate(ANSWERS):
            rid = store.add_response(NewResponse(pid, k, "base", index, answer, 6, "stop"))
            store.add_verifications(rid, verifiers.check_all(CONSTRAINTS, answer))
            if old_scores:
                score = old_scores[index]
                store.add_judgement(NewJudgement(rid, "self", "additive5", score, True, f"Score: {score}"))


@pytest.fixture
def run(runs_root, monkeypatch):
    monkeypatch.setattr(rubric_rewrite, "REWRITE_SAMPLE", 6)
    cfg = config.build(sets=["controller.rewrite_rubric=true",
                             "judge.position_bias_pairs=0", "judge.rubric=additive5"])
    folder = runs.create("rewrite", config.dumps(cfg))
    with open_store(folder.db_path) as store:
        yield folder, cfg, store


def test_a_better_rewrite_is_kept_written_and_used_by_the_next_judge(run):
    folder, cfg, store = run
    round_with(store, 1, old_scores=[1.0, 5.0, 3.0])  # the old rubric ranks the answers backwards
    policy = Policy(NEW_CRITERIA)
    try:
        trial = rubric_rewrite.attempt(StageContext(cfg, store, policy.engine, 1, run_dir=folder.path))
        assert trial.kept, trial.reason
        assert trial.data["agreement_before"] == 0.0 and trial.data["agreement_after"] == 1.0
        assert trial.data["held"] == 6 and trial.data["proposed"] == NEW_CRITERIA
        request = next(t for t in policy.texts if "Write a better checklist" in t)
        assert "Mixed Case, With Commas" in request  # a disagreement from the shown half
        written = folder.path / "prompts" / "judge_additive5.r1.txt"
        assert rubric_rewrite.criteria(written.read_text()) == NEW_CRITERIA
        assert trial.data["overrides"] == {"judge.rubric_prompt": "judge_additive5.r1.txt"}
        scored = [j for j in store.judgements(round=1) if j.rubric == "rewrite1"]
        assert len(scored) == 6 and all(j.parsed_ok for j in scored)
        again = rubric_rewrite.attempt(StageContext(cfg, store, policy.engine, 1, run_dir=folder.path))
        assert again.kept and len([j for j in store.judgements(round=1) if j.rubric == "rewrite1"]) == 6

        # the next round's judge, with the controller's override, sends the rewritten rubric
        round_with(store, 2)  # not judged yet
        next_cfg = controller.effective_config(cfg, trial.data["overrides"])
        policy.received.clear()
        judge_stage.run(StageContext(next_cfg, store, policy.engine, 2, run_dir=folder.path))
        assert policy.texts and all("MARK-NEW" in t for t in policy.texts)
    finally:
        policy.close()


def test_a_rewrite_that_is_not_better_or_not_whole_is_discarded(run):
    folder, cfg, store = run
    round_with(store, 1, old_scores=[5.0, 1.0, 3.0])  # the old rubric already agrees with the checks
    policy = Policy(NEW_CRITERIA)
    try:
        trial = rubric_rewrite.attempt(StageContext(cfg, store, policy.engine, 1, run_dir=folder.path))
    finally:
        policy.close()
    assert not trial.kept and "discarded" in trial.reason and trial.data["agreement_before"] == 1.0
    assert not (folder.path / "prompts" / "judge_additive5.r1.txt").exists()

    round_with(store, 2, old_scores=[1.0, 5.0, 3.0])
    short = Policy(NEW_CRITERIA[:2])
    try:
        trial = rubric_rewrite.attempt(StageContext(cfg, store, short.engine, 2, run_dir=folder.path))
    finally:
        short.close()
    assert not trial.kept and "had 2 numbered criteria where the rubric needs 5" in trial.reason
    assert not [j for j in store.judgements(round=2) if j.rubric == "rewrite2"]  # nothing judged for it


def test_the_loop_runs_a_trial_before_switching_an_unhealthy_rubric_off(tiny_model_dir, runs_root):
    from test_loop import make_run

    from selfalign import loop

    folder = make_run(tiny_model_dir, "trial", "self-reward", "run.rounds=1", "controller.rewrite_rubric=true",
                      "instruct.prompts_per_round=4")
    assert loop.run(folder, quiet=True) == 0
    with open_store(folder.db_path) as store:
        judge = [d for d in store.decisions() if d.kind == "judge"]
        events = [e.message for e in store.events()]
    # a random tiny model's rubric scores are unhealthy, and its rewrite cannot be a numbered list of 5
    assert judge and "rewrite" in judge[0].data, events
    assert judge[0].data["overrides"]["judge.rubric"] == "none"
    assert any("asking the policy for new criteria" in e for e in events)
