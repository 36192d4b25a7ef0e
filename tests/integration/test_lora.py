"""LoRA RL on the real stack (Ray + vLLM's AsyncLLM with enable_lora + DeepSpeed ZeRO-2), toy policy.

- every sync carries only the adapter, which the engine loads as a new LoRA: after some steps, vLLM's
  greedy output equals `transformers` + `peft` greedy output from the learner's weights, and differs
  from the base model's (the adapter matters); vLLM/learner log-prob drift stays below 1e-4;
- the sync is the adapter's bytes, a small fraction of the model's;
- pipelined steps (async_steps 1) swap adapters while the next batch generates, and no engine dies;
- a checkpoint holds the adapter and its optimizer state: restored, it brings the policy back exactly,
  and the engines with it;
- final/ is a plain merged checkpoint that `transformers` loads, and final/adapter a peft adapter,
  both greedy-equal to the engine;
- with `learner.lora.sync: merged` the engine gets W + BA as plain weights (no vLLM LoRA): its greedy
  output equals peft's from the learner's adapter and differs from the base model's, also after
  pipelined steps whose weights landed in flight.
"""

from pathlib import Path

import pytest
import torch

from rlvr import checkpoint
from rlvr.config import load_recipe
from rlvr.loop.trainer import Trainer, prepare
from rlvr.data import render_prompt

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _greedy(model, prompt_ids, tok, max_tokens):
    out = []
    for p in prompt_ids:
        ids = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=max_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id or 0, eos_token_id=tok.eos_token_id)[0, len(p):].tolist()
        out.append(ids[:ids.index(tok.eos_token_id) + 1] if tok.eos_token_id in ids else ids)
    return out


def _recipe(toy_dir, tmp, lora: str):
    return load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", [
        f"model.path={toy_dir}/model", f"data.train.0.path={toy_dir}/train.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
        f"learner.lora={lora}", "learner.lr=5e-3", "train.prompts_per_step=64", "train.steps=9",
        "train.eval_every=0", "data.eval_size=32", f"output_dir={tmp}", "name=lora", "logging.wandb=false",
        "logging.progress=false"])


def _vllm_greedy(trainer) -> tuple[list, list]:
    rows = trainer.prep.eval_rows
    prompts = [render_prompt(trainer.prep.tokenizer, r) for r in rows]
    comps, ids, _, _, _ = trainer._generate_and_score(rows, prompts, greedy=True)
    return ids, [c.token_ids for c in comps]


def _peft_policy(recipe, state):
    from transformers import AutoModelForCausalLM

    from rlvr.learners.lora import apply_lora

    model = apply_lora(AutoModelForCausalLM.from_pretrained(recipe.model.path, dtype=torch.float32), recipe.learner.lora)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and missing == ["lm_head.weight"]  # tied to the embedding
    return model.eval()


def _differs_from_base(recipe, prompt_ids, tok, vllm) -> int:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(recipe.model.path, dtype=torch.float32).eval()
    return sum(a != b for a, b in zip(_greedy(base, prompt_ids, tok, recipe.rollout.max_tokens), vllm))


def _two_then_three_pipelined(trainer, out: dict) -> None:
    """Start, 2 synchronous steps, 3 with async_steps 1, drain; then vLLM's greedy eval output and the
    learner's state, into `out`."""
    import ray

    trainer.start()
    out["specs"] = trainer.specs
    out["metrics"] = [trainer.train_step() for _ in range(2)]
    trainer.recipe.train.async_steps = 1
    out["async"] = [trainer.train_step() for _ in range(3)]
    trainer.recipe.train.async_steps = 0
    trainer.drain()
    out["prompt_ids"], out["vllm"] = _vllm_greedy(trainer)
    out["state"] = ray.get(trainer.learners[0].full_state.remote())


@pytest.fixture(scope="module")
def run(toy_dir, tmp_path_factory):
    import ray

    recipe = _recipe(toy_dir, tmp_path_factory.mktemp("lora-run"), "{rank: 8, alpha: 16}")
    trainer = Trainer(prepare(recipe))
    out = {"recipe": recipe}
    try:
        # Pipelined steps: the next batch is submitted while the adapter swaps; none may start with the
        # adapter being removed (that killed the engine core).
        _two_then_three_pipelined(trainer, out)
        ckpt = trainer.save_checkpoint()
        out["after_more"] = trainer.train_step()  # the policy moves on...
        out["moved"] = ray.get(trainer.learners[0].full_state.remote())
        trainer.restore(ckpt, checkpoint.verify(ckpt))  # ...and comes back
        out["restored"] = ray.get(trainer.learners[0].full_state.remote())
        out["vllm_restored"] = _vllm_greedy(trainer)[1]
        trainer.save_final()
        out["final"] = trainer.run_dir / "final"
        out["tokenizer"] = trainer.prep.tokenizer
    finally:
        trainer.shutdown()
    return out


def test_vllm_with_the_synced_adapter_equals_peft_greedy(run):
    r, tok = run["recipe"], run["tokenizer"]
    model = _peft_policy(r, run["state"])
    assert _greedy(model, run["prompt_ids"], tok, r.rollout.max_tokens) == run["vllm"]
    differ = _differs_from_base(r, run["prompt_ids"], tok, run["vllm"])
    assert differ >= 4, differ  # the engine really samples with the adapter
    for m in run["metrics"]:
        assert m["drift/abs_logprob_diff"] < 1e-4


def test_adapter_swaps_while_the_next_batch_generates(run):
    assert [m["step"] for m in run["async"]] == [3, 4, 5]
    assert all(m["fault/rollout_restarts"] == 0 for m in run["async"])
    assert all(m["staleness/max"] <= 1 for m in run["async"])


def test_syncs_carry_only_the_adapter(run):
    assert run["specs"] and all(".lora_A." in n or ".lora_B." in n for n, _, _ in run["specs"])
    adapter_bytes = sum(4 * torch.Size(shape).numel() for _, _, shape in run["specs"])
    full_bytes = sum(t.numel() * t.element_size() for n, t in run["state"].items() if "lora_" not in n)
    for m in run["metrics"]:
        assert m["sync/bytes"] == adapter_bytes
        assert m["learner/trainable_parameters"] == adapter_bytes // 4
    assert adapter_bytes < 0.15 * full_bytes


def test_checkpoint_restores_adapter_and_engines(run):
    assert any(not torch.equal(run["moved"][n], run["state"][n]) for n in run["state"] if "lora_" in n)
    assert all(torch.equal(run["restored"][n], run["state"][n]) for n in run["state"])
    assert run["vllm_restored"] == run["vllm"]


def test_final_is_a_merged_checkpoint_and_a_peft_adapter(run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r, tok = run["recipe"], run["tokenizer"]
    # final/ was saved after the restore: it is the checkpointed policy.
    merged = AutoModelForCausalLM.from_pretrained(run["final"], dtype=torch.float32).eval()
    assert _greedy(merged, run["prompt_ids"], tok, r.rollout.max_tokens) == run["vllm"]
    base = AutoModelForCausalLM.from_pretrained(r.model.path, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, run["final"] / "adapter").eval()
    assert _greedy(adapted, run["prompt_ids"], tok, r.rollout.max_tokens) == run["vllm"]


@pytest.fixture(scope="module")
def merged(toy_dir, tmp_path_factory):
    recipe = _recipe(toy_dir, tmp_path_factory.mktemp("lora-merged"), "{rank: 8, alpha: 16, sync: merged}")
    trainer = Trainer(prepare(recipe))
    out = {"recipe": recipe}
    try:
        _two_then_three_pipelined(trainer, out)  # merged weights may land while a batch generates
        out["tokenizer"] = trainer.prep.tokenizer
    finally:
        trainer.shutdown()
    return out


def test_merged_sync_serves_the_merged_policy_as_plain_weights(merged):
    r, tok = merged["recipe"], merged["tokenizer"]
    assert _greedy(_peft_policy(r, merged["state"]), merged["prompt_ids"], tok, r.rollout.max_tokens) == merged["vllm"]
    differ = _differs_from_base(r, merged["prompt_ids"], tok, merged["vllm"])
    assert differ >= 4, differ  # what the engine serves is the merged policy, not the base
    # The syncs carry the model's own tensors under its names, no adapter.
    assert merged["specs"] and not any("lora_" in n for n, _, _ in merged["specs"])
    assert all(m["fault/rollout_restarts"] == 0 for m in merged["async"])
    for m in merged["metrics"]:
        assert m["drift/abs_logprob_diff"] < 1e-4
