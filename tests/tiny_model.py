"""A tiny, randomly initialised Llama-architecture chat model with a real trained tokenizer.

Built offline in a second or two: a byte-level BPE tokenizer trained with `tokenizers` on a
small corpus made here, a ChatML chat template like SmolLM2's, and a 2-layer Llama with
hidden size 64. Its text is gibberish, but every code path (chat template, padding, LoRA,
log-probs, saving adapters) is the real one.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

_SUBJECTS = ["the model", "a student", "the river", "our team", "this recipe", "the city", "a robot",
             "the report", "my friend", "the garden", "a teacher", "the program"]
_VERBS = ["explains", "writes", "counts", "describes", "answers", "lists", "plans", "compares",
          "summarizes", "builds", "checks", "improves"]
_OBJECTS = ["three short bullet points", "a clear answer", "the main idea", "a list of steps",
            "two paragraphs", "a friendly email", "the sum of 12 and 30", "a haiku about rain",
            "JSON with a name field", "the capital of France", "every word in lowercase", "a title"]


def corpus(lines: int = 600, seed: int = 0) -> list[str]:
    """Simple English-like sentences with digits and punctuation, enough to train a small BPE."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        out.append(sentence.capitalize() + rng.choice([".", "!", "?", ", then stops.", ": done."]))
    out += [f"{a} + {b} = {a + b}" for a, b in itertools.product(range(0, 40, 7), range(0, 40, 9))]
    out += ["- item one\n- item two\n* item three", '{"name": "Ada", "age": 36}', "P.S. Thanks!",
            "<<A Title>>", "Résumé, naïve café: ünïcode."]
    return out


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|pad|>", unk_token=None)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(folder: str | Path, seed: int = 0, heads: int = 4) -> Path:
    """Write the tiny model and its tokenizer to `folder` with save_pretrained; returns the folder. `heads=1`
    gives 64-wide attention heads, the narrowest vLLM's CPU attention kernels take."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Zero rows give special tokens a logit of 0 while ordinary tokens get random ones, so greedy
    # decoding writes visible text instead of repeating an invisible special token.
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.all_special_ids] = 0.0
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
