"""Fused GPU kernels (Liger) for the learner's models, behind `learner.fused_kernels`.

liger-kernel (PyPI, Triton) replaces a Hugging Face model's RMSNorm, rotary embedding and SwiGLU
MLP with fused kernels, patched on the model instance. It is GPU-only and not a dependency of this
project: imported lazily, only when asked for. The LM head keeps the chunked log-prob path
(logprobs.py), which already never materialises the full logits.
"""

from __future__ import annotations

import importlib.util

MODES = ("auto", "on", "off")


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def use_fused_kernels(mode: str, device: str, available: bool | None = None) -> bool:
    """Whether to apply the kernels: "auto" on a CUDA device with liger-kernel installed (a CPU run
    silently keeps the plain path), "on" there or a one-line error, "off" never."""
    if mode not in MODES:
        raise ValueError(f"learner.fused_kernels must be one of {', '.join(MODES)}, got {mode!r}")
    available = liger_available() if available is None else available
    if mode == "off":
        return False
    if mode == "auto":
        return device == "cuda" and available
    if device != "cuda":
        raise RuntimeError("learner.fused_kernels: on needs a GPU (Liger's kernels are Triton); use auto or off on a CPU")
    if not available:
        raise RuntimeError("learner.fused_kernels: on needs the liger-kernel package (pip install liger-kernel); use auto or off")
    return True


def apply_fused_kernels(model) -> None:
    """Patch `model` (a Hugging Face PreTrainedModel) in place with Liger's RMSNorm, RoPE and SwiGLU;
    its loss kernels are left off (the learner computes its own log-probs)."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)
