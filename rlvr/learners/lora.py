"""LoRA on the learner (peft), and the names its tensors go by on the way to vLLM and to disk.

`apply_lora` injects peft's LoRA layers into the Hugging Face model *in place* and returns that same
model object: the learner keeps working with a plain `Qwen2ForCausalLM` (its `.model`, `.lm_head`,
log-prob and checkpoint code unchanged) whose trainable parameters are only the adapters; the base
weights are frozen, so the optimizer never holds them.

Names. Inside the model a LoRA-wrapped linear `...q_proj` holds `...q_proj.base_layer.weight` and
`...q_proj.lora_A.default.weight` / `lora_B`. The base weights keep their checkpoint names for a full
sync (`base_name`); adapters are saved, and sent to vLLM, under peft's file names
(`adapter_name`: `base_model.model.<path>.lora_A.weight`), which is what vLLM's LoRA loader reads.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

ADAPTER = "default"  # peft's adapter name inside the model


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


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def base_name(name: str) -> str:
    """A base weight's checkpoint name ('...q_proj.base_layer.weight' -> '...q_proj.weight')."""
    return name.replace(".base_layer.", ".")


def adapter_name(name: str) -> str:
    """An adapter tensor's name in peft's saved files (and vLLM's loader)."""
    return "base_model.model." + name.replace(f".{ADAPTER}.", ".")


def adapter_config_dict(model) -> dict:
    """adapter_config.json's content for the model's adapter."""
    cfg = model._rlvr_peft_config.to_dict()
    cfg["target_modules"] = sorted(cfg["target_modules"]) if isinstance(cfg["target_modules"], (set, list)) else cfg["target_modules"]
    return json.loads(json.dumps(cfg, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))


def write_adapter(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """An adapter directory peft and vLLM load: adapter_model.safetensors + adapter_config.json."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(config, indent=1))
    return path


def merged_state(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Base weights with each adapter folded in (W + B A * alpha / r), under checkpoint names: a plain
    model `transformers` and vLLM load. `state`: the model's own parameter names."""
    scale = config["lora_alpha"] / config["r"]
    out = {}
    for name, t in state.items():
        if is_adapter(name):
            continue
        out[base_name(name)] = t
    for name, a in state.items():
        if ".lora_A." in name:
            prefix = name.split(".lora_A.")[0]
            b = state[name.replace(".lora_A.", ".lora_B.")]
            w = out[prefix + ".weight"]
            out[prefix + ".weight"] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
    return out
