"""Config: defaults, recipes, TOML round trip, --set, and every kind of bad input."""

import dataclasses

import pytest

from selfalign import config
from selfalign.errors import ConfigError
from selfalign.store import open_store


def test_every_field_has_help_and_defaults_validate():
    cfg = config.build()
    for name, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help"
    assert cfg.model.name == "smollm2-135m"
    assert cfg.run.recipe == "self-reward"


def test_round_trip_through_toml(tmp_path):
    cfg = config.build(sets=["generate.stop=['###', \"a \\\"q\\\"\"]", "run.note=naïve \"quoted\" note"])
    path = tmp_path / "config.toml"
    config.save(cfg, path)
    assert config.load(path) == cfg
    assert "# sampling temperature" in path.read_text()


def test_recipe_defaults_then_file_then_set(tmp_path):
    isheep = config.build(recipe="isheep")
    assert (isheep.train.loss, isheep.pairs.rule, isheep.generate.samples_per_prompt) == ("sft", "sft", 1)
    path = tmp_path / "c.toml"
    path.write_text('[run]\nrecipe = "isheep"\n[train]\nlearning_rate = 3e-4\n')
    cfg = config.load(path, sets=["train.epochs=5"])
    assert cfg.train.loss == "sft" and cfg.train.learning_rate == 3e-4 and cfg.train.epochs == 5


@pytest.mark.parametrize("item, dotted, value", [
    ("generate.temperature=0.5", "generate.temperature", 0.5),
    ("model.name=org/some-model", "model.name", "org/some-model"),
    ("eval.win_rate=false", "eval.win_rate", False),
    ('generate.stop=["</s>"]', "generate.stop", ["</s>"]),
    ("run.note= spaced words ", "run.note", "spaced words"),
])
def test_set_values_are_toml_or_bare_strings(item, dotted, value):
    assert config.parse_set(item) == (dotted, value)
    assert config.build(sets=[item]).get(dotted) == value


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert config.build(sets=["generate.temperature=1"]).generate.temperature == 1.0
    with pytest.raises(ConfigError, match="whole number"):
        config.build(sets=["generate.max_new_tokens=12.5"])


def test_broken_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[generate\ntemperature = 0.7\n")
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML \(.*line 1"):
        config.load(path)


def test_unknown_key_cites_line_and_suggests(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[run]\nrounds = 2\n\n[generate]\ntemprature = 0.7\n")
    with pytest.raises(ConfigError, match=r"c.toml line 5: unknown key generate.temprature "
                                          r"\(did you mean 'temperature'\?\)"):
        config.load(path)


def test_unknown_section_and_non_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[genrate]\ntemperature = 0.7\n")
    with pytest.raises(ConfigError, match=r"line 1: unknown section \[genrate\] \(did you mean 'generate'"):
        config.load(path)
    path.write_text("rounds = 3\n")
    with pytest.raises(ConfigError, match="must be a \\[section\\] table"):
        config.load(path)


def test_out_of_range_value_cites_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[generate]\n# comment\ntemperature = -0.5\n")
    with pytest.raises(ConfigError, match=r"c.toml line 3: generate.temperature = -0.5 .* must be >= 0"):
        config.load(path)


@pytest.mark.parametrize("item, message", [
    ("generate.top_p=0", "must be > 0"),
    ("generate.top_p=1.5", "must be <= 1"),
    ("train.loss=ppo", "use one of dpo, ipo, ln-dpo, ld-dpo, sft, rrhf"),
    ("eval.win_rate=yes", "use true or false"),
    ("generate.stop=3", "list of strings"),
    ("generate.temperature=nan", "use a number"),
    ("run.rounds=0", "must be >= 1"),
    ("temperature=1", "must be section.key"),
    ("gen.temperature=1", "unknown section 'gen'"),
    ("generate.temperature", "has no '='"),
])
def test_bad_set_values(item, message):
    with pytest.raises(ConfigError, match=message):
        config.build(sets=[item])


def test_pair_recipe_needs_two_samples_but_isheep_does_not():
    with pytest.raises(ConfigError, match="samples_per_prompt = 1 cannot make preference pairs"):
        config.build(sets=["generate.samples_per_prompt=1"])
    assert config.build(recipe="isheep").generate.samples_per_prompt == 1


def test_blackbox_weight_needs_url_and_cyclealign_says_so():
    with pytest.raises(ConfigError, match="blackbox_url is empty"):
        config.build(recipe="cyclealign")
    cfg = config.build(recipe="cyclealign", sets=["judge.blackbox_url=http://127.0.0.1:8000/v1"])
    assert cfg.train.loss == "rrhf"


def test_length_margin_needs_a_dpo_like_loss():
    with pytest.raises(ConfigError, match="train.length_margin = 0.02 works with train.loss dpo"):
        config.build(sets=["train.loss=ipo", "train.length_margin=0.02"])
    assert config.build(sets=["train.loss=ld-dpo", "train.length_margin=0.02"]).train.length_margin == 0.02


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="not a recipe"):
        config.build(sets=["run.recipe=magic"])


def test_describe_keys_covers_every_field():
    keys = {row[0] for _, rows in config.describe_keys() for row in rows}
    assert "train.lora_r" in keys and "judge.blackbox_key_env" in keys
    assert len(keys) == sum(len(dataclasses.fields(c)) for c in config.SECTIONS.values())
    assert len(keys) < 115  # 115 before two booleans became one tie-break key and tuning knobs became constants


def test_a_watched_config_is_parsed_again_only_when_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    config.save(config.build(), path)
    watched = config.Watched(path)
    first = watched.get()
    parsed = []
    monkeypatch.setattr(config, "load", lambda p: parsed.append(p) or config.build(sets=["run.rounds=9"]))
    assert watched.get() is first and not parsed  # unchanged: no parsing
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert watched.get().run.rounds == 9 and parsed == [path]


def test_one_tie_break_key_and_old_run_files_still_load(tmp_path):
    assert config.build().pairs.tie_break == "longer"
    assert config.build(sets=["pairs.tie_break=shorter"]).pairs.tie_break == "shorter"
    with pytest.raises(ConfigError, match="pairs.prefer_longer"):
        config.build(sets=["pairs.prefer_longer=true"])  # the two booleans are gone from the settings
    for old, tie in (("prefer_shorter = true\nprefer_longer = false", "shorter"),
                     ("prefer_shorter = false\nprefer_longer = true", "longer"),
                     ("prefer_shorter = false\nprefer_longer = false", "none")):
        path = tmp_path / "old.toml"  # a config.toml written by an earlier version
        path.write_text(f"[pairs]\n{old}\n[controller]\ncurriculum_floor = 0.5\nrewrite_sample = 24\n")
        assert config.load(path).pairs.tie_break == tie  # and the retired controller knobs are dropped
    with pytest.raises(ConfigError, match="controller.curriculum_floor"):
        config.build(sets=["controller.curriculum_floor=0.5"])  # but no longer settable


def test_a_run_written_before_the_habit_gates_were_default_keeps_them_off(tmp_path):
    fresh = config.build().pairs
    assert fresh.unasked_form_gate and fresh.mirror and fresh.hollow_gate == "hollow"
    path = tmp_path / "old.toml"  # a run's config.toml from before: every pairs key of its day, the gates absent
    path.write_text("[pairs]\nrule = \"best-vs-worst\"\nmin_margin = 0.05\nmax_pairs_per_prompt = 1\n"
                    "quality_gate = true\nrepair = true\nsft_min_score = 9.0\nunasked_form_gate = true\n")
    old = config.load(path).pairs
    assert old.unasked_form_gate and not old.mirror and old.hollow_gate == "off"  # what it had; what it lacked: off
    path.write_text("[pairs]\nrule = \"ranked\"\n")  # a hand-written file sets one key: the rest are defaults
    assert config.load(path).pairs.hollow_gate == "hollow"
    path.write_text("[pairs]\nhollow_gate = true\n")  # the switch it was before it became a choice
    assert config.load(path).pairs.hollow_gate == "hollow"
    path.write_text("[pairs]\nhollow_gate = \"echoes\"\n")
    with pytest.raises(ConfigError, match="pairs.hollow_gate = 'echoes' is not allowed; use one of hollow, echo, off"):
        config.load(path)
    with pytest.raises(ConfigError, match="pairs.hollow_gate = 1 is not allowed; use one of hollow, echo, off"):
        config.build(sets=["pairs.hollow_gate=1"])


def test_init_and_fork_resolve_the_same_set_to_the_same_configuration(runs_root):
    """A fork rebuilds from its source's own choices plus the new --set, as init does from the defaults, so
    a default that follows another setting (the length term follows the loss) follows it in both."""
    from selfalign import fork as fork_mod
    from selfalign import runs

    source = runs.create("src", config.dumps(config.build()))
    with open_store(source.db_path, create=True) as store:
        store.start_round(0, None)
        store.finish_round(0, "done")
    for n, item in enumerate(("train.loss=ln-dpo", "train.loss=ipo", "train.loss=sft", "train.length_margin=0.05")):
        direct = config.build(sets=[item])
        forked = fork_mod.fork(source, f"f{n}", "1:instruct", [item])
        assert config.flat(config.load(forked.config_path)) | {"run.note": ""} == \
            config.flat(direct) | {"run.note": ""}, item
    # a source that chose a loss, forked back to the default loss, gets the default length term again
    ipo = config.build(sets=["train.loss=ipo"])
    assert config.changes(ipo) == ["train.loss=\"ipo\""]
    assert config.build(sets=[*config.changes(ipo), "train.loss=dpo"]).train.length_margin == 0.02


def test_changes_lists_what_differs_from_the_recipe_defaults():
    cfg = config.build(sets=["generate.max_new_tokens=192", "pairs.tie_break=none", "run.note=why"])
    assert config.changes(cfg) == ["generate.max_new_tokens=192", 'pairs.tie_break="none"']
    assert config.changes(config.build()) == []
    isheep = config.build(recipe="isheep")
    assert config.changes(isheep) == ["run.recipe=\"isheep\""]  # its own defaults are not changes


def test_the_recipe_defaults_give_way_to_settings_they_cannot_go_with():
    default = config.build()
    assert (default.generate.max_new_tokens, default.pairs.tie_break) == (320, "longer")
    assert (default.train.length_margin, default.train.length_margin_on) == (0.02, "unless-loop")
    # the length term needs a margin: another loss turns it off unless it is set too (then it is refused)
    assert config.build(sets=["train.loss=sft"]).train.length_margin == 0.0
    assert config.build(sets=["train.loss=ld-dpo"]).train.length_margin == 0.02
    assert config.build(sets=["train.loss=ln-dpo"]).train.length_margin == 0.0  # its mean already drops length
    assert config.build(sets=["train.loss=ln-dpo", "train.length_margin=0.01"]).train.length_margin == 0.01
    with pytest.raises(ConfigError, match="set train.length_margin = 0 or change the loss"):
        config.build(sets=["train.loss=ipo", "train.length_margin=0.02"])
    for recipe in ("isheep", "cyclealign"):  # the published methods keep their own pair rules
        published = config.build(recipe=recipe, sets=["judge.blackbox_url=http://127.0.0.1:9/v1"])
        assert published.train.length_margin == 0.0 and published.pairs.tie_break == "none"
        assert published.train.learning_rate == 1e-4  # the default's 2e-4 was measured on self-reward only
    assert default.train.learning_rate == 2e-4
