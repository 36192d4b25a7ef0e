"""The toy reward model: a tiny Qwen2 sequence classifier, trained in seconds on a separable task.

Task: a response ending in an even digit is good (label 1), one ending in an odd digit or a
letter is bad (label 0). The classifier pools the last token, so the task is separable and the
scores are known in advance: positive for an even final digit, negative otherwise (with a wide
margin). It shares the toy policy's byte-level tokenizer, so it scores the toy policy's answers.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

DEFAULT_TOY_RM_DIR = ".cache/rlvr/toy-rm"


def label_of(response: str) -> int:
    """The target: 1 when the response's last character is an even digit."""
    return int(bool(response) and response[-1] in "02468")


def synthetic_texts(n: int, seed: int) -> list[tuple[str, int]]:
    """(prompt + response, label) pairs: addition prompts, answers of 1-3 digits or words."""
    from rlvr.toy_model import question

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = f"<|user|>{question(rng.randint(10, 99), rng.randint(10, 99))}<|assistant|>"
        if rng.random() < 0.15:
            resp = "".join(rng.choice("abcdefghij xyz") for _ in range(rng.randint(1, 6)))
        else:
            resp = str(rng.randint(0, 999))
        out.append((q + resp, label_of(resp)))
    return out


def build_model(tokenizer, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=(len(tokenizer) + 63) // 64 * 64, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1, head_dim=64,
                      max_position_embeddings=128, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=None, torch_dtype="float32")
    return Qwen2ForSequenceClassification(cfg)


def build_toy_rm(out_dir: str | Path, *, seed: int = 0, steps: int = 300, log=print) -> Path:
    """Train and save the toy reward model (a few seconds on 2 cores); returns out_dir."""
    from rlvr.toy_model import build_tokenizer

    out = Path(out_dir)
    tok = build_tokenizer()
    tok.model_max_length = 128
    tok.padding_side = "right"
    model = build_model(tok, seed)
    data = synthetic_texts(4096, seed)
    enc = tok([t for t, _ in data], return_tensors="pt", padding=True, add_special_tokens=False)
    labels = torch.tensor([y for _, y in data], dtype=torch.float)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data), (128,), generator=gen)
        logits = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx]).logits[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log(f"  toy rm step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    held = synthetic_texts(512, seed + 1)
    with torch.no_grad():
        e = tok([t for t, _ in held], return_tensors="pt", padding=True, add_special_tokens=False)
        s = model(**e).logits[:, 0]
    acc = float(((s > 0).long() == torch.tensor([y for _, y in held])).float().mean())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    info = {"seed": seed, "steps": steps, "heldout_accuracy": acc, "min_abs_score": float(s.abs().min()),
            "seconds": round(time.time() - t0, 1), "task": "score > 0 iff the response ends in an even digit"}
    (out / "toy_rm.json").write_text(json.dumps(info, indent=2))
    return out
