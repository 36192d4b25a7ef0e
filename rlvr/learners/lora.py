"""LoRA on the learner (peft). The adapter's names and files, which the engines share, are in weights/adapter.py.

`apply_lora` injects peft's LoRA layers into the Hugging Face model *in place* and returns that same
model object: the learner keeps working with a plain `Qwen2ForCausalLM` (its `.model`, `.lm_head`,
log-prob and checkpoint code unchanged) whose trainable parameters are only the adapters; the base
weights are frozen, so the optimizer never holds them.
"""
from __future__ import annotations

import json

from rlvr.weights.adapter import ADAPTER


def lora_config(cfg):
    """peft's LoraConfig for the recipe's `learner.lora` section."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                      bias="none", task_type="CAUSAL_LM")


def apply_lora(model, cfg):
    """Inject LoRA adapters into `model` (in place; returns the same object, base weights frozen).

    The adapters start as peft initialises them: A random, B zero, so the policy is unchanged at step 0.
    """
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(cfg))
    base = peft_model.get_base_model()
    base._rlvr_peft_config = peft_model.peft_config[ADAPTER]
    return base


def adapter_config_dict(model) -> dict:
    """adapter_config.json's content for the model's adapter."""
    cfg = model._rlvr_peft_config.to_dict()
    cfg["target_modules"] = sorted(cfg["target_modules"]) if isinstance(cfg["target_modules"], (set, list)) else cfg["target_modules"]
    return json.loads(json.dumps(cfg, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
