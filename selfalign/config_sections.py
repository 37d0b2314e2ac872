"""The configuration's sections: one dataclass per TOML table, a help string and allowed values per field,
and what each recipe changes. Loading, validating and writing them is config.py's job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

RECIPES = ("self-reward", "isheep", "cyclealign")
PAIR_LOSSES = ("dpo", "ipo", "ln-dpo", "ld-dpo", "rrhf")
MARGIN_LOSSES = ("dpo", "ln-dpo", "ld-dpo")  # sigmoid losses of a pair's margin: train.length_margin applies


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None, min_exclusive: bool = False, bool_as: tuple[str, str] | None = None) -> Any:
    """A config field: its default, one line of help, and what values are allowed. bool_as: the choices that
    false and true stand for, for a switch that became a choice (its old configs and commands still read)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive,
            "bool_as": bool_as}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunSection:
    recipe: str = opt("self-reward", "method: self-reward (DPO on judged samples), isheep (SFT on "
                      "self-filtered answers) or cyclealign (black-box and white-box rankings agree)",
                      choices=RECIPES)
    prompting: str = opt("chat", "chat: the tokenizer's chat template; urial: in-context examples "
                         "for base models without one", choices=("chat", "urial"))
    rounds: int = opt(3, "rounds to run before the loop stops", min=1)
    seed: int = opt(0, "seed for sampling, shuffling and LoRA initialisation", min=0)
    device: str = opt("auto", "where the policy runs: auto picks cuda, then mps, then cpu",
                      choices=("auto", "cpu", "cuda", "mps"))
    note: str = opt("", "free text: why this run exists (shown by compare and status)")


@dataclass
class ModelSection:
    name: str = opt("smollm2-135m", "registry name (see `selfalign models list`), Hugging Face id "
                    "(org/name) or local folder")
    dtype: str = opt("auto", "weights dtype: auto is float32 on CPU (bf16 is emulated there and "
                     "slow) and bfloat16 on CUDA", choices=("auto", "float32", "bfloat16", "float16"))
    max_context: int = opt(2048, "tokens of prompt plus response the policy may see", min=128)


@dataclass
class InstructSection:
    prompts_per_round: int = opt(240, "new training prompts each round (I-SHEEP self-instruct); fewer make a round "
                                  "faster but move a small model less", min=0)
    seed_prompts_per_round: int = opt(16, "seed tasks also trained on each round, each used once (with "
                                       "prompts_per_round = 0: how many of your own tasks a round trains on)", min=0)
    seed_file: str = opt("seed_tasks.jsonl", "seed instructions, in prompts/ or a path: the demonstrations the "
                         "policy writes new prompts from, or your own training tasks (one JSON object with an "
                         "\"instruction\" per line)")
    template: str = opt("self_instruct.txt", "self-instruct prompt template, in prompts/ or a path")
    demos: int = opt(3, "seed demonstrations shown per synthesis request", min=1, max=10)
    temperature: float = opt(1.0, "sampling temperature when writing instructions", min=0.0)
    top_p: float = opt(0.95, "nucleus sampling when writing instructions", min=0.0, max=1.0,
                       min_exclusive=True)
    max_new_tokens: int = opt(96, "token budget for one written instruction", min=8)
    rouge_threshold: float = opt(0.7, "drop a new instruction whose ROUGE-L against any earlier "
                                 "one exceeds this", min=0.0, max=1.0)
    min_words: int = opt(4, "drop instructions shorter than this", min=1)
    max_words: int = opt(150, "drop instructions longer than this", min=1)
    constraint_share: float = opt(1.0, "share of prompts that get verifiable constraints (ACT); a prompt without "
                                  "one has no exact signal, so on a small model it builds no pair",
                                  min=0.0, max=1.0)
    max_constraints: int = opt(3, "at most this many constraints on one prompt", min=0, max=6)


@dataclass
class GenerateSection:
    engine: str = opt("auto", "auto: our transformers engine, the one measured and tested (vLLM-CPU sampled at "
                      "half its rate; vLLM's CUDA path has not run here); vllm: vLLM, on CUDA or its CPU build; "
                      "http: an OpenAI-compatible server", choices=("auto", "transformers", "vllm", "http"))
    tensor_parallel_size: int = opt(1, "vllm: GPUs one model is split over", min=1)
    gpu_memory_utilization: float = opt(0.6, "vllm: share of GPU memory it may take (the trainer needs the rest "
                                        "while vLLM sleeps)", min=0.05, max=0.99)
    http_url: str = opt("", "http: base URL of the server that serves the policy, e.g. http://127.0.0.1:8000/v1")
    http_model: str = opt("", "http: the model name the server knows the base policy by")
    http_key_env: str = opt("OPENAI_API_KEY", "http: environment variable holding the API key (never stored)")
    http_load_adapters: bool = opt(True, "http: load each round's adapter into the server at runtime (vLLM "
                                   "with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")
    samples_per_prompt: int = opt(4, "responses sampled per prompt (K)", min=1, max=64)
    temperature: float = opt(0.7, "sampling temperature", min=0.0)
    top_p: float = opt(0.9, "nucleus sampling", min=0.0, max=1.0, min_exclusive=True)
    max_new_tokens: int = opt(320, "token budget for one sampled answer; too small cuts answers off, so ending and "
                               "length constraints can never be met and the chosen answers drift shorter", min=1)
    batch_size: int = opt(128, "sequences decoded together (on 2 CPU cores larger batches pay; a stop "
                          "request waits for the current batch)", min=1)
    cache_mib: float = opt(1536, "transformers engine: rows join a batch only while its KV cache stays under this "
                           "many MiB; lower it when sampling runs out of memory, raise it (or 0: no limit) on a "
                           "machine with memory to spare", min=0)
    stop: list[str] = opt([], "extra stop strings (URIAL adds its own)")
    urial_template: str = opt("urial.txt", "in-context template used when run.prompting = urial")


@dataclass
class JudgeSection:
    rubric: str = opt("none", "self-judge prompt: additive5 (Self-Rewarding, 'Score: N'), isheep (two 1-10 "
                      "scales) or none (the default: a 135M judge is noise and cost half a round; turn it on "
                      "for larger policies)", choices=("additive5", "isheep", "none"))
    samples: int = opt(1, "judge samples averaged per response", min=1, max=8)
    temperature: float = opt(0.0, "judge sampling temperature (0 is greedy)", min=0.0)
    max_new_tokens: int = opt(48, "token budget for one judgement", min=4)
    rubric_prompt: str = opt("", "a file replacing prompts/judge_additive5.txt (a bare name is looked up in the "
                             "run's prompts/ first); the controller's rubric rewrite sets it")
    weight_rubric: float = opt(0.25, "weight of the rubric self-judge in the combined score (a 135M "
                               "judge mostly gives every answer the same score)", min=0.0)
    weight_verifiers: float = opt(1.0, "weight of the constraint satisfaction rate", min=0.0)
    weight_likelihood: float = opt(0.5, "weight of the policy's length-normalised log-likelihood rank",
                                   min=0.0)
    weight_blackbox: float = opt(0.0, "weight of the black-box model's ranking", min=0.0)
    weigh_by_agreement: bool = opt(True, "scale each weight but the verifiers' by how far above chance that signal "
                                   "orders the round's answers as the verifiers do (a coin gets weight 0)")
    blackbox_url: str = opt("", "base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    blackbox_model: str = opt("", "model name sent to the black-box server")
    blackbox_key_env: str = opt("OPENAI_API_KEY", "environment variable holding the black-box key "
                                "(the key itself is never stored)")
    blackbox_timeout_s: float = opt(60.0, "seconds before one black-box request is retried", min=1.0)
    blackbox_concurrency: int = opt(4, "black-box requests in flight at once", min=1)
    blackbox_retries: int = opt(3, "retries (with exponential backoff) for timeouts, 429 and 5xx", min=0)
    demos: int = opt(2, "CycleAlign: agreed examples shown to the black-box judge", min=0, max=8)
    position_bias_pairs: int = opt(16, "response pairs judged in both orders to measure position bias",
                                   min=0)


@dataclass
class PairsSection:
    rule: str = opt("best-vs-worst", "best-vs-worst: one DPO pair per prompt; ranked: the full "
                    "order (RRHF); sft: keep answers scoring at least sft_min_score",
                    choices=("best-vs-worst", "ranked", "sft"))
    min_margin: float = opt(0.05, "drop pairs whose combined scores differ by less (ties)", min=0.0)
    max_pairs_per_prompt: int = opt(1, "best-vs-worst: pairs per prompt (best/worst, second/second-worst...)",
                                    min=1)
    quality_gate: bool = opt(True, "a response cut off by the token budget or looping scores below every clean one: "
                             "it may be rejected, never chosen (verifiers alone cannot see a loop)")
    unasked_form_gate: bool = opt(True, "an answer wearing a marked form its prompt did not ask for (quoted, all "
                                  "capitals, JSON, a <<title>>, a P.S., ...: verifiers/forms.py) scores below every "
                                  "clean one, like the quality gate: it may be rejected, never chosen, and no "
                                  "repaired copy keeps one; without it forms asked for on some prompts spread to all")
    hollow_gate: str = opt("hollow", "answers that say nothing of their own are never chosen, and are rejected "
                           "before a loop. hollow (or true): a form met and nothing said, at most 2 distinct words "
                           "beside [placeholders] and the words its constraints supply ('Hope this helps.', "
                           "'*highlight* *text*': verifiers.hollow); echo: those and answers that hand the prompt "
                           "back, only its words, mostly one copied run (verifiers.echo); off (or false)",
                           choices=("hollow", "echo", "off"), bool_as=("off", "hollow"))
    repair: bool = opt(True, "when no answer to a constrained prompt meets all its constraints, edit the best one "
                       "that can be fixed by rule (case, quotes, JSON, trimming, bullets, ending phrase...) and "
                       "use the edited copy as the chosen answer (verifiers/repair.py); only for constraints "
                       "of form, never new content")
    mirror: bool = opt(True, "for each pair whose chosen answer wears a marked form its prompt asked for (quoted, "
                       "all capitals, JSON, ...), add the mirror pair: the same prompt without that request, a plain "
                       "answer to it chosen over the formed one (rejected); teaches when a form is wanted, not "
                       "only that it is")
    rejected: str = opt("worst", "best-vs-worst: which answer is rejected. worst: the lowest-scoring one (often an "
                        "answer cut off or looping: rejecting loops is what taught the model to stop looping); "
                        "finished: the lowest-scoring answer that finished cleanly when one is at least min_margin "
                        "below the chosen, else the worst",
                        choices=("worst", "finished"))
    tie_break: str = opt("longer", "best-vs-worst: which of the answers tied at the top score is chosen (and which of "
                         "those tied at the bottom rejected). longer: the longest chosen, the shortest rejected (the "
                         "verifiers cannot tell tied answers apart, and without it a 135M model's chosen answers "
                         "drift shorter each round); shorter: the shorter one, and a tie of two lengths becomes a "
                         "pair (for rubric judges that reward verbosity); none: sample order, and a tie builds no "
                         "pair", choices=("longer", "shorter", "none"))
    sft_min_score: float = opt(9.0, "I-SHEEP: keep answers scoring at least this on both 1-10 "
                               "scales", min=1.0, max=10.0)


@dataclass
class CorrectSection:
    mode: str = opt("off", "Aligner in the loop, from round 2 on: a corrector (a second LoRA on the base, trained on "
                    "the earlier rounds' repaired copies, close pairs and clean answers) rewrites the answers that "
                    "miss a constraint. off: no corrector (the default until a gain row shows it helps, "
                    "docs/gain.md; `selfalign correct` trains and measures one without it); compete: a usable "
                    "correction is one more candidate for its prompt, like a repaired copy; over-source: where a "
                    "usable correction meets more constraints than its answer, the pair is that correction over "
                    "that answer (about the same length by construction)", choices=("off", "compete", "over-source"))


@dataclass
class TrainSection:
    loss: str = opt("dpo", "dpo, ipo, ln-dpo (length-normalised), ld-dpo (length-desensitised: see ld_alpha), "
                    "sft or rrhf", choices=("dpo", "ipo", "ln-dpo", "ld-dpo", "sft", "rrhf"))
    beta: float = opt(0.1, "DPO/IPO temperature: larger keeps the policy nearer the reference",
                      min=0.0, min_exclusive=True)
    learning_rate: float = opt(2e-4, "peak AdamW learning rate; lower it when rounds get rejected or answers collapse",
                               min=0.0, min_exclusive=True)
    epochs: int = opt(2, "passes over the round's pairs", min=1)
    batch_size: int = opt(8, "pairs per optimizer step (before accumulation)", min=1)
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step", min=1)
    warmup_ratio: float = opt(0.1, "share of steps spent warming up", min=0.0, max=1.0)
    scheduler: str = opt("cosine", "learning-rate decay after warm-up",
                         choices=("cosine", "linear", "constant"))
    ld_alpha: float = opt(0.5, "ld-dpo: weight of the longer answer's tokens past the pair's common length (1: "
                          "DPO; 0: the excess does not count)", min=0.0, max=1.0)
    length_margin: float = opt(0.02, "dpo, ln-dpo, ld-dpo: R-DPO's length term, this times (chosen tokens - rejected "
                               "tokens) taken off each pair's margin, so pairs won by a shorter answer pull less "
                               "(0: off; 0.01-0.05 at beta 0.1; unless set, off for ln-dpo and the losses "
                               "without a margin)", min=0.0)
    length_margin_on: str = opt("unless-loop", "which pairs the length term applies to: all; finished (only "
                                "pairs whose rejected answer ended by itself without looping: a loop's or a cut-off "
                                "answer's length is not verbosity, and rejecting it should keep its full pull); "
                                "unless-loop (all but pairs whose rejected answer loops)",
                                choices=("all", "finished", "unless-loop"))
    sft_weight: float = opt(1.0, "dpo, ipo, ln-dpo, ld-dpo: add this times the chosen answer's per-token negative "
                            "log-likelihood (RPO style), so preference training cannot lower the chosen answer "
                            "along with the rejected one (and a repaired answer is learned, not only preferred); "
                            "0 for plain DPO", min=0.0)
    max_grad_norm: float = opt(1.0, "gradient clipping norm", min=0.0, min_exclusive=True)
    max_length: int = opt(512, "prompt plus response tokens per training example", min=16)
    lora_r: int = opt(16, "LoRA rank", min=1)
    lora_alpha: int = opt(32, "LoRA alpha (scale = alpha / r)", min=1)
    lora_dropout: float = opt(0.05, "LoRA dropout", min=0.0, max=1.0)
    lora_targets: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                   "down_proj"], "module names that get LoRA adapters")
    reference: str = opt("base", "DPO reference: base (adapter off) or previous (last round's policy)",
                         choices=("base", "previous"))
    init_from: str = opt("previous", "each round trains from the previous adapter or from the base",
                         choices=("previous", "base"))
    micro_batch_tokens: int = opt(512, "most tokens through the model at once (a prompt counts once when packed, "
                                  "else with each response); a larger batch is split and its gradients summed: the "
                                  "same step with less activation memory; lower it when training runs out of memory, "
                                  "0 = no limit", min=0)
    packing: bool = opt(True, "one row per prompt: the prompt once, then each response, masked so a response "
                        "sees only the prompt and itself; no padding inside and the prompt computed once (the "
                        "same log-probs as one row per response)")
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass for every "
                                       "micro-batch, not only those over micro_batch_tokens: less memory, about "
                                       "a third slower")
    processes: int = opt(1, "data-parallel processes for the train stage, one per GPU; above 1 the stage runs "
                         "under the launcher below (batch_size is then per process)", min=1)
    launcher: str = opt("accelerate", "what starts those processes: accelerate (accelerate launch) or torchrun",
                        choices=("accelerate", "torchrun"))
    accelerate_config: str = opt("", "an accelerate config file for `accelerate launch --config_file` "
                                 "(empty: one machine, processes = train.processes)")


@dataclass
class EvalSection:
    heldout_file: str = opt("heldout.jsonl", "held-out prompts, in prompts/ or a path; never trained on")
    prompts: int = opt(150, "held-out prompts the loop evaluates each round (the first of the benchmark's fixed "
                    "shuffled order; `selfalign eval --all` answers all of them)", min=1)
    max_new_tokens: int = opt(320, "token budget for one held-out response (the embedded model's greedy answers "
                               "that do not loop end within it)", min=1)
    temperature: float = opt(0.0, "held-out sampling temperature (0 is greedy)", min=0.0)
    win_rate: bool = opt(False, "judge round k against round 0 in both orders by the base model (off by default: "
                      "the embedded model names the first answer every time, so it says nothing)")


@dataclass
class ControllerSection:
    enabled: bool = opt(True, "after each round, decide what the next round does (all switches below)")
    score_weight_csr: float = opt(1.0, "held-out score = this x instruction-level CSR + ...", min=0.0)
    score_weight_win_rate: float = opt(0.5, "... + this x win rate over round 0 (0.5 for round 0 itself)", min=0.0)
    gate: bool = opt(True, "reject a round whose held-out score drops below the best by more than the tolerance; "
                     "the next round starts from the best adapter")
    tolerance: float = opt(0.05, "how far below the best held-out score a round may fall and still be kept (the "
                           "95 % interval of 150 held-out prompts is about +-0.05 wide)",
                           min=0.0)
    lr_backoff: float = opt(0.5, "after a rejected round, multiply the learning rate by this", min=0.0,
                            min_exclusive=True, max=1.0)
    beta_boost: float = opt(2.0, "after a rejected round, multiply DPO beta by this", min=1.0)
    curriculum: bool = opt(True, "constraint types the policy satisfies least get more of the next round's "
                           "prompts")
    repair_judge: bool = opt(True, "when the rubric self-judge is unhealthy (collapse, position bias, low "
                             "verifier agreement), switch it off and lean on verifiers and likelihood")
    rewrite_rubric: bool = opt(False, "before switching an unhealthy additive5 rubric off, let the policy rewrite "
                               "its criteria; the rewrite is kept only if it agrees with the verifiers more "
                               "often on held-aside responses")
    patience: int = opt(2, "stop when the best held-out score has not improved for this many rounds (0: never)",
                        min=0)
    max_hours: float = opt(0.0, "stop once the run has spent this many hours in rounds (0: no budget)", min=0.0)


@dataclass
class ReportSection:
    to: list[str] = opt([], "mirror every train step and round metric into these, like TRL's report_to: tensorboard "
                        "(event files in the run folder; pip install 'selfalign[report]'), wandb (a W&B run; "
                        "WANDB_MODE=offline works without a network); the database stays the source of truth",
                        choices=("tensorboard", "wandb"))
    tensorboard_dir: str = opt("", "where TensorBoard event files go (empty: tensorboard/ in the run folder)")
    wandb_project: str = opt("selfalign", "the W&B project runs are logged to")
    wandb_entity: str = opt("", "the W&B entity (team or user); empty: your default")


SECTIONS: dict[str, type] = {
    "run": RunSection, "model": ModelSection, "instruct": InstructSection,
    "generate": GenerateSection, "judge": JudgeSection, "correct": CorrectSection, "pairs": PairsSection,
    "train": TrainSection, "eval": EvalSection, "controller": ControllerSection, "report": ReportSection,
}

# What each recipe changes from the field defaults (the user's file and --set still win).
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "self-reward": {},
    "isheep": {"generate.samples_per_prompt": 1, "judge.rubric": "isheep", "pairs.rule": "sft",
               "train.loss": "sft", "train.init_from": "base", "train.learning_rate": 1e-4,
               "pairs.tie_break": "none"},
    # CycleAlign as published: its pseudo-labels come from the two rankings only, no repaired answers
    "cyclealign": {"pairs.repair": False, "judge.rubric": "none", "judge.weight_rubric": 0.0,
                   "judge.weight_blackbox": 1.0,
                   "judge.weight_likelihood": 1.0, "pairs.rule": "ranked", "train.loss": "rrhf",
                   "pairs.tie_break": "none", "train.learning_rate": 1e-4},
}


@dataclass
class Config:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    instruct: InstructSection = field(default_factory=InstructSection)
    generate: GenerateSection = field(default_factory=GenerateSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    correct: CorrectSection = field(default_factory=CorrectSection)
    pairs: PairsSection = field(default_factory=PairsSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    controller: ControllerSection = field(default_factory=ControllerSection)
    report: ReportSection = field(default_factory=ReportSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)
