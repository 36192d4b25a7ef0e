"""The LoRA adapter format shared by the learner (which writes it) and the engines (which load it).

Names. Inside the learner's model a LoRA-wrapped linear `...q_proj` holds `...q_proj.base_layer.weight`
and `...q_proj.lora_A.default.weight` / `lora_B`. The base weights keep their checkpoint names for a full
sync (`base_name`); adapters are saved, and sent to vLLM, under peft's file names
(`adapter_name`: `base_model.model.<path>.lora_A.weight`), which is what vLLM's LoRA loader reads.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

ADAPTER = "default"  # peft's adapter name inside the model


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def base_name(name: str) -> str:
    """A base weight's checkpoint name ('...q_proj.base_layer.weight' -> '...q_proj.weight')."""
    return name.replace(".base_layer.", ".")


def adapter_name(name: str) -> str:
    """An adapter tensor's name in peft's saved files (and vLLM's loader)."""
    return "base_model.model." + name.replace(f".{ADAPTER}.", ".")


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
