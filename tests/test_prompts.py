"""Prompt files and templates: the shipped files, lookup, rendering and bad input."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from selfalign import prompts, verifiers
from selfalign.errors import ConfigError
from selfalign.rouge import RougeIndex


def test_seed_file_is_large_and_diverse():
    seeds = prompts.read_seed_tasks("seed_tasks.jsonl")
    assert len(seeds) >= 120
    categories = {s["category"] for s in seeds}
    assert {"writing", "explanation", "advice", "coding", "math", "classification", "rewriting",
            "brainstorming", "planning"} <= categories
    lengths = [len(s["instruction"].split()) for s in seeds]
    assert min(lengths) <= 8 and max(lengths) >= 25  # short and long
    assert len({s["instruction"] for s in seeds}) == len(seeds)


@pytest.mark.parametrize("file", ["heldout.jsonl", "test.jsonl"])
def test_each_split_is_large_valid_and_has_plain_prompts_after_the_constrained(file):
    rows = prompts.read_prompt_file(file)
    constrained = [h for h in rows if h["constraints"]]
    assert len(constrained) >= 500
    per_type = Counter(c["id"] for h in constrained for c in h["constraints"])
    assert set(per_type) == set(verifiers.REGISTRY) and min(per_type.values()) >= 20
    assert {len(h["constraints"]) for h in constrained} == {1, 2, 3}
    for h in constrained:
        assert verifiers.compatible([c["id"] for c in h["constraints"]])
        # only wordings that training never uses, so the benchmark measures transfer to new sentences
        assert all(c["wording"].startswith("h") for c in h["constraints"])
    assert len({h["prompt"] for h in rows}) == len(rows)
    # prompts without constraints (the view of a habit) come after, so the loop's sample (the first
    # eval.prompts) is the same constrained sample as before they were added
    plain = [h for h in rows if not h["constraints"]]
    assert len(plain) >= 40 and rows[len(constrained):] == plain


def test_no_held_out_prompt_is_near_a_training_or_seed_task_and_the_splits_do_not_overlap():
    """ROUGE-L above 0.7 against the seed tasks or the other split is a near-duplicate:
    the test split must measure prompts nothing was trained or tuned on."""
    index = RougeIndex()
    for seed in prompts.read_seed_tasks("seed_tasks.jsonl"):
        index.add(seed["instruction"])
    dev = [h["prompt"] for h in prompts.read_prompt_file("heldout.jsonl")]
    test = [h["prompt"] for h in prompts.read_prompt_file("test.jsonl")]
    assert [t for t in dev + test if index.is_near_duplicate(t, 0.7)] == []
    for text in dev:
        index.add(text)
    assert [t for t in test if index.is_near_duplicate(t, 0.7)] == []
    assert not set(dev) & set(test)


def test_only_the_evaluation_command_reads_the_test_split():
    """The loop, the controller and every tuning path read eval.heldout_file (dev); the file name of the
    test split appears only in the module that resolves it and in the eval command's help, and only
    `selfalign eval --split test` asks for it."""
    root = Path(prompts.__file__).parent
    naming = sorted(str(f.relative_to(root)) for f in root.rglob("*.py") if "test.jsonl" in f.read_text())
    assert naming == ["cli.py", "stages/evaluate.py"]
    asking = sorted(str(f.relative_to(root)) for f in root.rglob("*.py")
                    if re.search(r"split\s*==\s*\"test\"|split=\"test\"|SPLITS", f.read_text()))
    assert asking == ["cli.py", "stages/evaluate.py"]


def test_templates_have_their_placeholders_and_urial_its_stops():
    template = prompts.load_template("self_instruct.txt", ("demos",))
    text = template.render(demos="Task 1: say hi", next=2)
    assert "Task 1: say hi" in text and "{{" not in text and not text.startswith("+++")
    urial = prompts.load_template("urial.txt", ("query",))
    assert urial.stop and "# Query:" in urial.stop
    rendered = urial.render(query="What is 2 + 2?")
    assert rendered.count("# Query:") == 4 and rendered.rstrip().endswith("# Answer:\n```")


def test_missing_placeholder_names_file_and_placeholder(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Here are tasks:\n{{demo}}\n")
    with pytest.raises(ConfigError, match=r"mine.txt has no \{\{demos\}\} placeholder"):
        prompts.load_template(str(path), ("demos",))
    with pytest.raises(ConfigError, match=r"needs a value for \{\{demo\}\}"):
        prompts.load_template(str(path)).render(other=1)


def test_unclosed_or_broken_front_matter(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("+++\nstop = [\n{{query}}")
    with pytest.raises(ConfigError, match="never closes it"):
        prompts.load_template(str(path))
    path.write_text("+++\nstop = [\n+++\n{{query}}")
    with pytest.raises(ConfigError, match="invalid TOML front matter"):
        prompts.load_template(str(path))


def test_run_folder_copies_win(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "self_instruct.txt").write_text("Mine: {{demos}}")
    assert prompts.find("self_instruct.txt", tmp_path) == tmp_path / "prompts" / "self_instruct.txt"
    assert prompts.find("urial.txt", tmp_path) == prompts.PROMPTS_DIR / "urial.txt"
    with pytest.raises(ConfigError, match="is in neither"):
        prompts.find("nope.txt", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        prompts.find(str(tmp_path / "nope.txt"))


def test_malformed_seed_lines_name_the_line(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps({"instruction": "ok"}) + "\n\n# a comment\n{broken\n")
    with pytest.raises(ConfigError, match="seeds.jsonl line 4 is not valid JSON"):
        prompts.read_seed_tasks(str(path))
    path.write_text(json.dumps({"instruction": "ok"}) + "\n" + json.dumps({"text": "no"}) + "\n")
    with pytest.raises(ConfigError, match='line 2 has no "instruction"'):
        prompts.read_seed_tasks(str(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="line 1 must be a JSON object"):
        prompts.read_seed_tasks(str(path))
    path.write_text("")
    with pytest.raises(ConfigError, match="holds no seed tasks"):
        prompts.read_seed_tasks(str(path))


def test_prompt_file_with_a_bad_constraint(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"prompt": "Hi", "constraints": [{"id": "max_words", "params": {"n": 5}}]}) + "\n"
                    + json.dumps({"prompt": "Hi", "constraints": [{"id": "shout"}]}) + "\n")
    with pytest.raises(ConfigError, match="mine.jsonl line 2: unknown constraint 'shout'"):
        prompts.read_prompt_file(str(path))
