"""LoRA helpers (learners/lora.py) on the toy shape: names, merging, files that peft loads."""

import pytest
import torch

from rlvr.learners.config import LoraConfig
from rlvr.learners.lora import adapter_config_dict, apply_lora
from rlvr.weights.adapter import adapter_name, base_name, is_adapter, merged_state, write_adapter


def _toy(seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=32, max_position_embeddings=32, tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).eval()


def _trained(cfg):
    model = apply_lora(_toy(), cfg)
    with torch.no_grad():  # stand in for training: B is zero at initialisation
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)
    return model


def test_only_adapters_train_and_names_map_both_ways():
    model = apply_lora(_toy(), LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "down_proj"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter(n) for n in trainable)
    assert {n.split(".")[-3] for n in trainable} == {"lora_A", "lora_B"}
    assert len(trainable) == 2 * 2 * 2  # 2 layers x 2 modules x (A, B)
    assert base_name("model.layers.0.self_attn.q_proj.base_layer.weight") == "model.layers.0.self_attn.q_proj.weight"
    assert adapter_name("model.layers.0.mlp.down_proj.lora_B.default.weight") == \
        "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    # At initialisation the adapter is a no-op: the policy starts as the base.
    ids = torch.randint(0, 64, (2, 10))
    assert torch.equal(model(ids).logits, _toy()(ids).logits)


def test_merged_state_and_adapter_files_give_the_adapted_model(tmp_path):
    from peft import PeftModel

    cfg = LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    model = _trained(cfg)
    ids = torch.randint(0, 64, (3, 12))
    want = model(ids).logits
    state = dict(model.named_parameters())
    config = adapter_config_dict(model)
    merged = _toy()
    missing, unexpected = merged.load_state_dict(merged_state(state, config), strict=False)
    assert not unexpected and missing == ["lm_head.weight"]  # tied to the embedding
    torch.testing.assert_close(merged(ids).logits, want, atol=1e-5, rtol=1e-5)
    assert (merged(ids).logits - _toy()(ids).logits).abs().max() > 1e-2  # the adapter changed the policy
    write_adapter(tmp_path / "adapter", {adapter_name(n): t for n, t in state.items() if is_adapter(n)}, config)
    loaded = PeftModel.from_pretrained(_toy(), tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded(ids).logits, want, atol=1e-6, rtol=1e-6)


def test_lora_config_errors_name_the_field():
    from rlvr.config import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="learner.lora.rank"):
        load_recipe("recipes/toy_addition_cpu.yaml", ["learner.lora={rank: 0}"])
    with pytest.raises(RecipeError, match="learner: .*lora needs zero_stage 0-2"):
        load_recipe("recipes/toy_addition_cpu.yaml", ["learner.lora={rank: 8}", "learner.zero_stage=3"])
    with pytest.raises(RecipeError, match="inflight_updates cannot be used with learner.lora"):
        load_recipe("recipes/toy_addition_cpu.yaml", ["learner.lora={rank: 8}", "train.inflight_updates=true", "train.async_steps=1"])
    # merged syncs send plain weights, which a running request can continue under
    r = load_recipe("recipes/toy_addition_cpu.yaml", ["learner.lora={rank: 8, sync: merged}", "train.inflight_updates=true",
                                                      "train.async_steps=1"])
    assert r.learner.lora.sync == "merged"
    with pytest.raises(RecipeError, match="learner.lora.sync"):
        load_recipe("recipes/toy_addition_cpu.yaml", ["learner.lora={rank: 8, sync: both}"])


def test_a_merged_sync_engine_serves_a_plain_model(monkeypatch):
    """With `sync: merged` the engines start without vLLM's LoRA: what they receive is the whole model."""
    from rlvr.config import load_recipe
    from rlvr.loop.engines import EnginePool

    seen = {}

    class Remote:
        def options(self, **kw):
            return self

        def remote(self, *args, **kw):
            seen.update(kw)

    monkeypatch.setattr("ray.remote", lambda cls: Remote())
    pool = EnginePool()
    for sync, rank in (("merged", None), ("adapter", 8)):
        pool.recipe = load_recipe("recipes/toy_addition_cpu.yaml", [f"learner.lora={{rank: 8, sync: {sync}}}"], check_files=False)
        pool._new_engine(0, {})
        assert seen["lora_rank"] == rank
