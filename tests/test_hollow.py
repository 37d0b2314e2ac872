"""Hollow answers: a form met with nothing said, and the pairs gate that stops the loop from choosing one."""

from selfalign import config, verifiers
from selfalign.stages import StageContext
from selfalign.stages import pairs as pairs_stage
from selfalign.store import open_store
from selfalign.store.rows import NewPrompt, NewResponse

END = [{"id": "end_phrase", "params": {"phrase": "Hope this helps."}}]


def test_an_answer_is_hollow_when_only_its_constraints_and_placeholders_speak():
    assert verifiers.hollow(END, "Hope this helps.")  # the phrase the prompt supplied is not the answer's own
    assert not verifiers.hollow([], "Hope this helps.")  # three words of its own to a prompt that gave none
    assert verifiers.hollow([], "*highlight* *text*\n*highlight* *text*")
    assert verifiers.hollow([], "[city] [maximum number] [largest number]")
    assert verifiers.hollow([{"id": "start_word", "params": {"word": "Well"}}], "Well, well, well!")
    assert verifiers.hollow([], "")
    assert not verifiers.hollow([], "Ludwig van Beethoven.")  # a short real answer keeps three words
    assert not verifiers.hollow(END, "Water the plant once a week. Hope this helps.")


def _round(tmp_path, answers):
    store = open_store(tmp_path / "h.db", create=True)
    (pid,) = store.add_prompts([NewPrompt("how do I keep a fern alive?", "seed", constraints=END, round=1)])
    ids = {}
    for i, (label, text, tokens) in enumerate(answers):
        ids[label] = store.add_response(NewResponse(pid, 1, "base", i, text, tokens, "stop", -1.0))
        store.add_verifications(ids[label], verifiers.check_all(END, text))
    return store, ids


# each test turns on the gate it is about (all three are on by default)
GATES_OFF = ["pairs.unasked_form_gate=false", "pairs.mirror=false", "pairs.hollow_gate=false"]


def _pairs(store, *sets):
    cfg = config.build(sets=["judge.weight_likelihood=0", "pairs.repair=false", *GATES_OFF, *sets])
    pairs_stage.run(StageContext(cfg, store, None, round=1))
    return store.pairs(1), store.metrics(1)[1]


def test_the_hollow_gate_chooses_the_answer_that_says_something_and_rejects_the_hollow_one(tmp_path):
    """The hollow answer and the real one both meet the constraint; the hollow one comes first and, with
    tie_break shorter, wins without the gate. With it the real answer is chosen, and the hollow one is
    rejected ahead of the looping answer that would otherwise be the worst."""
    loop = "Keep it moist. " * 40
    store, ids = _round(tmp_path, [("hollow", "Hope this helps.", 4),
                                   ("real", "Keep the soil moist and the light soft. Hope this helps.", 14),
                                   ("loop", loop, 120)])
    (pair,), _ = _pairs(store, "pairs.tie_break=shorter")
    assert (pair.chosen_id, pair.rejected_id) == (ids["hollow"], ids["loop"])
    (pair,), metrics = _pairs(store, "pairs.tie_break=shorter", "pairs.hollow_gate=true")
    assert (pair.chosen_id, pair.rejected_id) == (ids["real"], ids["hollow"])
    assert metrics["pairs/hollow_rate"] == 1 / 3


def test_the_hollow_gate_builds_no_pair_when_every_answer_is_hollow(tmp_path):
    store, _ = _round(tmp_path, [("a", "Hope this helps.", 4), ("b", "Plant. Hope this helps.", 5),
                                 ("c", "Nope.", 2)])
    assert _pairs(store)[0]  # without the gate a hollow answer is learned
    assert _pairs(store, "pairs.hollow_gate=true")[0] == []


def test_a_rise_in_hollow_answers_is_shown_as_judge_health():
    from rich.console import Console

    from selfalign import metrics
    from selfalign.tui.widgets import health_lines

    rounds = {0: {"eval/unasked/quoted": 0.03, "eval/hollow_rate": 0.02},
              1: {"eval/unasked/quoted": 0.03, "eval/hollow_rate": 0.05},
              2: {"eval/unasked/quoted": 0.03, "eval/hollow_rate": 0.21}}
    rounds[0]["eval/echo_rate"], rounds[2]["eval/echo_rate"] = 0.09, 0.18
    assert metrics.gaming_rise(rounds, 1, "eval/hollow_rate") is None  # three points more is noise on 150 prompts
    assert metrics.gaming_rise(rounds, 2, "eval/hollow_rate") == (0.21, 0.02)
    console = Console(width=120, record=True)
    console.print(health_lines(rounds))
    text = console.export_text()
    assert "hollow answers 21% (round 0 2%)" in text and "hollow answers 5%" not in text
    assert "echoes 18% (round 0 9%)" in text


CLASSIFY = "Classify these weather events as common in summer or winter: blizzard, heatwave, frost, thunderstorm."


def test_an_answer_echoes_when_it_hands_the_prompt_back():
    assert verifiers.echo(CLASSIFY, "blizzard, heatwave, frost, thunderstorm.")  # the input list copied out
    assert verifiers.echo(CLASSIFY, "Classify these weather events.")
    question = verifiers.attach("Why do clouds float?", [{"id": "avoid_word", "params": {"word": "stuff"}}])
    sentence = verifiers.describe({"id": "avoid_word", "params": {"word": "stuff"}})
    assert verifiers.echo(question, sentence)  # a constraint's own sentence read back as the answer
    assert verifiers.echo(CLASSIFY, "[answer] blizzard, heatwave, frost")  # placeholders are not words of its own
    # the prompt's words in an order of the answer's own are an answer; so is one word of its own
    assert not verifiers.echo(CLASSIFY, "Winter: blizzard, frost. Summer: heatwave, thunderstorm.")
    assert not verifiers.echo(CLASSIFY, "Winter: blizzard, frost.")  # "winter: blizzard" is the prompt's, yet short
    assert not verifiers.echo("What is the capital of France?", "The capital of France is Paris.")
    assert not verifiers.echo(CLASSIFY, "heatwave, frost")  # two words are too few to call a copy
    assert not verifiers.echo(CLASSIFY, "")


def test_the_echo_gate_chooses_an_answer_over_the_prompt_handed_back(tmp_path):
    """hollow_gate = "echo" gates an echo as it gates a hollow answer; with "hollow" (the default, also read
    from true) the echo, which meets the prompt's no constraints as well as the answer does, wins the tie by
    being shorter, and teaches the copy (in lower case here, as the input was: the unasked-form gate is off)."""
    store = open_store(tmp_path / "e.db", create=True)
    (pid,) = store.add_prompts([NewPrompt(CLASSIFY, "seed", round=1)])
    echo = store.add_response(NewResponse(pid, 1, "base", 0, "blizzard, heatwave, frost, thunderstorm.", 9, "stop",
                                          -1.0))
    real = store.add_response(NewResponse(pid, 1, "base", 1, "Winter: blizzard, frost. Summer: heatwave, "
                                          "thunderstorm.", 14, "stop", -1.0))
    assert config.build(sets=["pairs.hollow_gate=true"]).pairs.hollow_gate == "hollow"
    assert config.build(sets=["pairs.hollow_gate=false"]).pairs.hollow_gate == "off"
    (pair,), _ = _pairs(store, "pairs.tie_break=shorter", "pairs.hollow_gate=true")
    assert (pair.chosen_id, pair.rejected_id) == (echo, real)
    (pair,), metrics = _pairs(store, "pairs.tie_break=shorter", "pairs.hollow_gate=echo")
    assert (pair.chosen_id, pair.rejected_id) == (real, echo)
    assert metrics["pairs/hollow_rate"] == 1 / 2


def test_held_out_figures_count_echoes_over_the_prompt_as_the_policy_saw_it():
    from selfalign import heldout

    constraints = [{"id": "avoid_word", "params": {"word": "stuff"}}]
    question = verifiers.attach(CLASSIFY, constraints)
    answers = [heldout.Answer(1, constraints, "blizzard, heatwave, frost, thunderstorm.", 9, "stop", question),
               heldout.Answer(2, constraints, "Winter: blizzard, frost. Summer: heatwave.", 9, "stop", question),
               heldout.Answer(3, [], "Winter: blizzard, frost.", 6, "stop", CLASSIFY),
               heldout.Answer(4, [], "blizzard, heatwave, frost", 3, "stop", CLASSIFY)]
    figures = heldout.round_figures(answers)
    assert figures["echo_share"] == 0.5
    assert heldout.eval_metrics(figures)["eval/echo_rate"] == 0.5


def test_the_echo_gate_makes_no_repaired_copy_of_an_echo(tmp_path):
    """Rule repair would put the echoed input in capitals and call it the answer: with the hollow gate alone
    that copy is made; with the echo gate the answer that adds a word of its own is the one repaired."""
    upper = [{"id": "uppercase", "params": {}}]
    results = {}
    for mode in ("hollow", "echo"):
        store = open_store(tmp_path / f"{mode}.db", create=True)
        (pid,) = store.add_prompts([NewPrompt("Translate into French: the cat sleeps on the warm mat.", "seed",
                                              constraints=upper, round=1)])
        for i, text in enumerate(["the cat sleeps on the warm mat.", "the cat sleeps on the warm mat today."]):
            rid = store.add_response(NewResponse(pid, 1, "base", i, text, 9, "stop", -1.0))
            store.add_verifications(rid, verifiers.check_all(upper, text))
        cfg = config.build(sets=["judge.weight_likelihood=0", *GATES_OFF, f"pairs.hollow_gate={mode}"])
        pairs_stage.run(StageContext(cfg, store, None, round=1))
        results[mode] = [r.text for r in store.responses(round=1) if r.kind == "repair"]
    assert results["hollow"] == ["THE CAT SLEEPS ON THE WARM MAT."]
    assert results["echo"] == ["THE CAT SLEEPS ON THE WARM MAT TODAY."]  # the answer with a word of its own
