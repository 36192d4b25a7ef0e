"""`rlvr bench learner`: the model-FLOPs count behind MFU, the peak table, and a CPU run."""

import re
import subprocess
import sys

import pytest

from rlvr.learners.config import AlgorithmConfig
from rlvr.learners.bench import (QWEN25_05B, QWEN25_15B, SMOLLM2_135M, ModelShape, forward_flops, peak_flops, synthetic_batch,
                                 train_step_flops)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_forward_flops_by_hand():
    # N = 100, 2 layers x 3 heads x head_dim 4, one sequence of T = 5:
    # 2*N*T = 1000, attention 4*2*3*4*T^2 = 96 * 25 = 2400
    assert forward_flops([5], 100, 2, 3, 4) == 3400
    assert forward_flops([5, 1], 100, 2, 3, 4) == 3400 + 200 + 96
    # 40 of the 100 are an LM head that runs on 2 of the 5 positions: 2*60*5 + 2*40*2 = 760
    assert forward_flops([5], 100, 2, 3, 4, head_params=40, head_rows=[2]) == 760 + 2400


def test_train_step_flops_counts_passes():
    shape = ModelShape(n_params=1000, vocab_size=10, hidden_size=8, n_layers=2, n_heads=2, head_dim=4, tied=True)
    # 6 tokens, 4 of them response tokens: the LM head (10*8 = 80 params) runs on those 4 only
    fwd = forward_flops([6], 1000, 2, 2, 4, head_params=80, head_rows=[4])
    assert fwd == 2 * 920 * 6 + 2 * 80 * 4 + 4 * 2 * 2 * 4 * 36
    # forward + backward = 3 forwards
    assert train_step_flops([6], [4], shape, AlgorithmConfig()) == 3 * fwd
    # two epochs also need the old log-probs (one more forward); a reference model one more
    assert train_step_flops([6], [4], shape, AlgorithmConfig(ppo_epochs=2, kl_coef=0.1)) == (6 + 1 + 1) * fwd
    # gae adds the critic: its N drops the LM head (10*8) and adds the value head (8 + 1), on every token
    critic = forward_flops([6], 1000 - 80 + 9, 2, 2, 4)
    assert train_step_flops([6], [4], shape, AlgorithmConfig(advantage="gae")) == 3 * fwd + 4 * critic


def test_synthetic_batch_lengths():
    fixed = synthetic_batch(3, 4, 5, 7, vocab_size=50)
    assert fixed["response_mask"].sum(-1).tolist() == [7.0] * 12 and fixed["attention_mask"].sum(-1).tolist() == [12] * 12
    ragged = synthetic_batch(3, 4, 5, 7, vocab_size=50, min_response_len=2)
    lens = ragged["response_mask"].sum(-1)
    assert lens.min() >= 2 and lens.max() <= 7 and len(set(lens.tolist())) > 1
    assert (ragged["attention_mask"].sum(-1) == lens + 5).all()


def test_matmul_params_leave_out_the_embedding_lookup():
    tied = ModelShape(n_params=1000, vocab_size=10, hidden_size=8, n_layers=1, n_heads=1, head_dim=8, tied=True)
    untied = ModelShape(n_params=1080, vocab_size=10, hidden_size=8, n_layers=1, n_heads=1, head_dim=8, tied=False)
    # tied: the one V x d matrix is the output projection (a matmul); untied: drop the lookup table
    assert tied.policy_matmul_params == untied.policy_matmul_params == 1000


def test_qwen25_05b_shape_has_the_published_parameter_count():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B))
    n = sum(p.numel() for p in model.parameters())
    assert n == 494_032_768
    assert ModelShape.from_config(model.config, n).head_dim == 64


@pytest.mark.parametrize("config, n_params", [(QWEN25_15B, 1_543_714_304), (SMOLLM2_135M, 134_515_008)])
def test_other_shapes_have_the_published_parameter_counts(config, n_params):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cls, cfg = (LlamaForCausalLM, LlamaConfig) if config is SMOLLM2_135M else (Qwen2ForCausalLM, Qwen2Config)
    with torch.device("meta"):
        model = cls(cfg(**config))
    assert sum(p.numel() for p in model.parameters()) == n_params


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H100 NVL", 835e12), ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12),
                                        ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GH200 480GB", 989e12),
                                        ("Some Future GPU", None)])
def test_peak_flops_by_device_name(name, peak):
    assert peak_flops(name) == peak


@pytest.mark.integration
def test_bench_learner_runs_on_cpu():
    """Packed (the unpacked path differs only in its micro-batch plan, which the learner tests cover)."""
    out = subprocess.run([sys.executable, "-m", "rlvr.cli", "bench", "learner", "--shape", "toy", "--steps", "2",
                          "--prompts", "4", "--device", "cpu", "--packing", "--max-tokens", "200"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"learner tokens/s ([\d,.]+)\s+samples/s ([\d,.]+)", out.stdout)
    assert m, out.stdout
    assert float(m.group(1).replace(",", "")) > 0 and float(m.group(2).replace(",", "")) > 0
    assert "4 prompts x 8 = 32 sequences of 16 + 16 tokens, packed micro-batches of <= 200 tokens (6 per step)" in out.stdout
    m = re.search(r"padding ([\d.]+)% .* micro-batch imbalance ([\d.]+), rank imbalance ([\d.]+) over 2 ranks", out.stdout)
    assert m, out.stdout
    # 1024 tokens in 6 micro-batches of whole 32-token sequences: 6 or 5 sequences each
    assert float(m.group(1)) == 0.0 and 1.0 <= float(m.group(2)) <= 1.2 and float(m.group(3)) == 1.0
