"""`selfalign export`: a round's pairs in TRL's preference format, its SFT set, its adapter, and
optionally a merged model folder that plain transformers loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from selfalign import config as config_mod
from selfalign import controller, verifiers
from selfalign.errors import UsageError
from selfalign.runs import RunFolder
from selfalign.store import open_store


def export_round(folder: RunFolder, round_k: int | None, out: str | None = None, merged: bool = False) -> Path:
    cfg = config_mod.load(folder.config_path)
    adapters = folder.adapter_rounds()
    with open_store(folder.db_path) as store:
        rounds_with_pairs = sorted({k for k in range(1, (store.rounds()[-1].k if store.rounds() else 0) + 1)
                                    if store.pairs(k)})
        k = round_k if round_k is not None else controller.best_kept_round(cfg, store, adapters)
        if k is None:
            k = adapters[-1] if adapters else (rounds_with_pairs or [None])[-1]
        if k is None:
            raise UsageError(f"run {folder.name} has no trained round yet; run `selfalign run {folder.name}` first")
        pairs = store.pairs(k)
        if not pairs and k not in adapters:
            raise UsageError(f"round {k} of {folder.name} has no pairs and no adapter; rounds with adapters: "
                             f"{adapters or 'none'}")
        if merged and k not in adapters:  # before anything is written: no half export
            raise UsageError(f"round {k} of {folder.name} has no adapter to merge (it has pairs only); export "
                             f"without --merged, or pick a round with an adapter: {adapters or 'none'}")
        target = Path(out) if out else folder.path / "export" / str(k)
        target.mkdir(parents=True, exist_ok=True)
        responses = {r.id: r for r in store.responses(round=k)}
        with open(target / "pairs.jsonl", "w", encoding="utf-8") as prefs, \
                open(target / "sft.jsonl", "w", encoding="utf-8") as sft:
            for p in pairs:
                prompt = store.prompt(p.prompt_id)
                user = [{"role": "user", "content": verifiers.attach(prompt.text, prompt.constraints)}]
                chosen = [{"role": "assistant", "content": responses[p.chosen_id].text}]
                if p.rejected_id is None:
                    sft.write(json.dumps({"messages": user + chosen}, ensure_ascii=False) + "\n")
                    continue
                rejected = [{"role": "assistant", "content": responses[p.rejected_id].text}]
                prefs.write(json.dumps({"prompt": user, "chosen": chosen, "rejected": rejected, "margin": p.margin,
                                        "rule": p.rule}, ensure_ascii=False) + "\n")
                sft.write(json.dumps({"messages": user + chosen}, ensure_ascii=False) + "\n")
    if k in adapters:
        shutil.copytree(folder.adapter_dir(k), target / "adapter", dirs_exist_ok=True)
        if merged:
            from peft import PeftModel

            from selfalign import models

            model, tokenizer = models.load(cfg.model.name, device="cpu")
            PeftModel.from_pretrained(model, str(folder.adapter_dir(k))).merge_and_unload().save_pretrained(
                target / "merged")
            tokenizer.save_pretrained(target / "merged")
    return target
