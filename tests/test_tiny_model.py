"""The tiny fixture model is a real transformers chat model."""

from selfalign import models


def test_tiny_model_loads_and_generates_through_chat_template(tiny_model_dir):
    import torch

    model, tok = models.load(str(tiny_model_dir), device="cpu")
    assert model.config.num_hidden_layers == 2
    assert tok.padding_side == "left" and tok.pad_token == "<|pad|>"
    text = tok.apply_chat_template([{"role": "user", "content": "Write a haiku about rain."}],
                                   add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    batch = tok([text, "short"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # left padding
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=8, do_sample=True)
    assert out.shape[1] > batch["input_ids"].shape[1]


def test_tiny_tokenizer_round_trips_unicode(tiny_model_dir):
    _, tok = models.load(str(tiny_model_dir), device="cpu")
    sample = "Résumé: naïve café, 12 + 30 = 42. P.S. ünïcode ✓"
    assert tok.decode(tok(sample)["input_ids"], skip_special_tokens=True) == sample
