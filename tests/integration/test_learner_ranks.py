"""Data parallelism on the real DeepSpeed engine over gloo: two ranks take the same step as one
(policy, and with advantage gae the critic too), also with packed token-budget micro-batches;
right padding beyond the longest sequence changes nothing (each micro-batch is cut after its
longest sequence); packed micro-batches give the padded ones' gradient for every loss aggregation."""

import pytest
import ray
import torch

from rlvr.learners.actor import LearnerActor
from rlvr.learners.batch import build_batch, shard_by_groups
from rlvr.learners.critic import load_value_model

pytestmark = pytest.mark.integration


def _batch(tokenizer, long_first_group: bool = False):
    """4 groups of 4; `long_first_group`: group 0's responses 36 characters long (~57-token rows, within the
    toy's 64-token context), the others' a few."""
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]
    prompts, responses, rewards = [], [], []
    for i, a in enumerate((12, 40, 27, 63)):
        p = enc(tokenizer.apply_chat_template([{"role": "user", "content": f"What is {a} + 23?"}], tokenize=False, add_generation_prompt=True))
        for j, answer in enumerate((str(a + 23), str(a + 32), str(a + 3) + "9", "1")):  # ragged lengths on purpose
            prompts.append(p)
            responses.append(enc((answer * 40)[:36] if long_first_group and i == 0 else answer) + [tokenizer.eos_token_id])
            rewards.append(1.0 if j == 0 else float(j == i % 4) * 0.5)
    lps = [[-1.0] * len(r) for r in responses]
    return build_batch(prompts, responses, lps, rewards, group_size=4, pad_id=tokenizer.pad_token_id, temperature=1.0)


@pytest.fixture(scope="module")
def ray_cluster():
    """One Ray instance for the module; each test starts and kills its own learner actors."""
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _train(model_dir, ranks, batch, zero_stage, advantage, learner=None, **algorithm):
    Learner = ray.remote(num_cpus=1)(LearnerActor)
    cfg = {"zero_stage": zero_stage, "lr": 1e-3, "micro_batch_size": 4, "grad_clip": 1.0, "ranks": ranks, **(learner or {})}
    micro = 16 // ranks // 4
    actors = [Learner.remote(str(model_dir), rank=i, world_size=ranks, learner=cfg, algorithm={"advantage": advantage, **algorithm}, total_steps=2,
                             micro_batches=micro) for i in range(ranks)]
    host, port = ray.get(actors[0].address.remote())
    ray.get([a.setup.remote(host, port) for a in actors])
    packing = bool((learner or {}).get("packing"))
    for _ in range(2):
        outs = ray.get([a.train_step.remote(s) for a, s in zip(actors, shard_by_groups(batch, ranks, balance_tokens=packing))])
    if packing:  # every rank ran as many micro-batches (ZeRO pairs their collectives), none padded
        assert len({o["learner/micro_batches"] for o in outs}) == 1 and all(o["learner/padding_frac"] == 0 for o in outs)
        if ranks == 2:
            assert [o["learner/filler_micro_batches"] for o in outs] == [2, 0]
    states = ray.get([a.full_state.remote() for a in actors])
    critics = ray.get([a.critic_state.remote() for a in actors])
    for a in actors:
        ray.kill(a)
    return states[0], critics[0]


# Packed: a 50-token budget; group 0 (~57-token rows) alone outweighs the other three groups, so
# token-balanced shards give rank 0 its 4 long rows (one micro-batch each) and rank 1 the 12 short
# ones (6 micro-batches of 2): rank 0 runs 2 empty filler micro-batches to keep pace.
PACKED = {"packing": True, "max_tokens_per_micro_batch": 50}


# ZeRO-3 with a critic is the hard case (every gather is collective); ZeRO-2 plain and packed ZeRO-3 with
# filler micro-batches cover the rest (ZeRO-3 grpo and packed ZeRO-2 added CI minutes, not cases).
@pytest.mark.parametrize("zero_stage, advantage, packing", [(2, "grpo", False), (3, "gae", False), (3, "gae", True)])
def test_two_ranks_equal_one_rank(ray_cluster, toy_dir, zero_stage, advantage, packing):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = toy_dir / "model"
    batch = _batch(AutoTokenizer.from_pretrained(model_dir), long_first_group=packing)
    learner = PACKED if packing else None
    one, critic_one = _train(model_dir, 1, batch, zero_stage, advantage, learner)
    two, critic_two = _train(model_dir, 2, batch, zero_stage, advantage, learner)
    init = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    assert set(one) == set(two)
    moved = max((one[k] - init[k].detach()).abs().max().item() for k in one)
    assert moved > 1e-4  # the step did something, so equality below is not vacuous
    # Each rank sorts its shard by length into micro-batches, so one rank groups rows differently
    # from two, and float sums differ in the last bits; Adam turns that into update differences
    # where gradients are near zero. Equal within 5% of the largest update (a rank training on its
    # own gradients alone differs by whole updates).
    for k in one:
        assert (two[k] - one[k]).abs().max().item() <= 0.05 * moved, k
    assert bool(critic_one) == (advantage == "gae") and set(critic_one) == set(critic_two)
    if critic_one:
        assert critic_one["value_head.weight"].abs().max() > 1e-4  # moved from its zero init
        critic_init = dict(load_value_model(str(model_dir), torch.float32).named_parameters())
        critic_moved = max((critic_one[k] - critic_init[k].detach()).abs().max().item() for k in critic_one)
    for k in critic_one:  # GAE whitening and the value loss are global over the ranks, like the policy loss
        assert (critic_two[k] - critic_one[k]).abs().max().item() <= 0.05 * critic_moved, k

def test_extra_right_padding_changes_nothing(ray_cluster, toy_dir):
    """gae with two PPO epochs: the policy's old log-probs and the critic's old values (no-grad passes,
    padded back to the batch width), the policy and value losses all see trimmed micro-batches."""
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    model_dir = toy_dir / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = _batch(tok)
    wide = dict(batch)
    for key, value in (("input_ids", tok.pad_token_id), ("attention_mask", 0), ("response_mask", 0), ("rollout_logprobs", 0)):
        wide[key] = F.pad(batch[key], (0, 9), value=value)
    algo = dict(ppo_epochs=2, loss_agg="seq-mean-token-sum-norm", loss_agg_constant=12)
    narrow_policy, narrow_critic = _train(model_dir, 1, batch, 2, "gae", **algo)
    wide_policy, wide_critic = _train(model_dir, 1, wide, 2, "gae", **algo)
    for k in narrow_policy:
        torch.testing.assert_close(wide_policy[k], narrow_policy[k], rtol=1e-4, atol=1e-5, msg=k)
    assert narrow_critic["value_head.weight"].abs().max() > 1e-4
    for k in narrow_critic:
        torch.testing.assert_close(wide_critic[k], narrow_critic[k], rtol=1e-4, atol=1e-5, msg=k)


def test_compiled_learner_takes_the_eager_step(ray_cluster, toy_dir):
    """learner.compile: torch.compile'd decoder layers and log-prob kernel (inductor's C++ backend
    here) train to the same weights as eager PyTorch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = toy_dir / "model"
    batch = _batch(AutoTokenizer.from_pretrained(model_dir))
    eager, _ = _train(model_dir, 1, batch, 2, "grpo")
    compiled, _ = _train(model_dir, 1, batch, 2, "grpo", learner={"compile": True})
    init = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    moved = max((eager[k] - init[k].detach()).abs().max().item() for k in eager)
    assert moved > 1e-4
    for k in eager:  # fused kernels round differently; Adam turns that into small update differences
        assert (compiled[k] - eager[k]).abs().max().item() <= 0.05 * moved, k


def test_two_ranks_equal_one_rank_with_lora(ray_cluster, toy_dir):
    """learner.lora under ZeRO-2: only the adapters move, and two ranks take the step one takes."""
    zero_stage = 2
    from transformers import AutoTokenizer

    model_dir = toy_dir / "model"
    batch = _batch(AutoTokenizer.from_pretrained(model_dir))
    lora = {"lora": {"rank": 8, "alpha": 16}}
    one, _ = _train(model_dir, 1, batch, zero_stage, "grpo", learner=lora)
    two, _ = _train(model_dir, 2, batch, zero_stage, "grpo", learner=lora)
    from transformers import AutoModelForCausalLM

    from rlvr.weights.adapter import base_name

    init = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    for k, t in one.items():
        if "lora_" not in k:  # the base is frozen
            assert torch.equal(t, init[base_name(k)].detach()), k
    moved = max(one[k].abs().max().item() for k in one if "lora_B" in k)  # B starts at zero
    assert moved > 1e-4
    for k in one:
        assert (two[k] - one[k]).abs().max().item() <= 0.05 * moved, k


def test_packed_gradient_equals_padded_for_every_aggregation(ray_cluster, toy_dir):
    """Loss scaling stays exact with packing: the policy's gradient norm (before clipping) of a step
    is the padded learner's, for every loss aggregation mode; with gae, a reference model (KL) and
    two minibatches the old log-prob, reference and critic passes run packed too."""
    from transformers import AutoTokenizer

    from rlvr.learners.losses import AGG_MODES

    model_dir = toy_dir / "model"
    batch = _batch(AutoTokenizer.from_pretrained(model_dir), long_first_group=True)
    algorithm = {"advantage": "gae", "kl_coef": 0.05, "num_minibatches": 2, "loss_agg_constant": 40}

    # nested: Ray ships it by value (the test module is not importable in a worker)
    def _grad_norms(model_dir, batch, algorithm, modes):
        """policy (and critic) gradient norms of one step per loss aggregation mode, padded and packed
        learners side by side in one process, at the same weights (lr ~0)."""
        from rlvr.weights.sync import free_port

        learners = {}
        for packing in (False, True):
            learners[packing] = LearnerActor(str(model_dir), rank=0, world_size=1, total_steps=len(modes), micro_batches=4,
                                             learner={"zero_stage": 2, "lr": 1e-12, "micro_batch_size": 4, "threads": 1,
                                                      "packing": packing, "max_tokens_per_micro_batch": 50},
                                             algorithm=algorithm)
            learners[packing].setup("127.0.0.1", free_port())
        out = []
        for mode in modes:
            row = {}
            for packing, l in learners.items():
                l.algo = l.algo.model_copy(update={"loss_agg": mode})
                m = l.train_step(batch)
                row[packing] = (m["policy/grad_norm"], m.get("critic/grad_norm"), m["learner/micro_batches"], m["learner/padding_frac"])
            out.append(row)
        return out

    rows = ray.get(ray.remote(num_cpus=1)(_grad_norms).remote(model_dir, batch, algorithm, AGG_MODES))
    for mode, row in zip(AGG_MODES, rows):
        (padded, padded_critic, padded_mbs, padded_waste), (packed, packed_critic, packed_mbs, packed_waste) = row[False], row[True]
        assert padded > 1e-3, mode
        assert abs(packed - padded) <= 1e-3 * padded, (mode, packed, padded)
        assert abs(packed_critic - padded_critic) <= 1e-3 * padded_critic, (mode, packed_critic, padded_critic)
        assert packed_waste == 0 < padded_waste and packed_mbs != padded_mbs, mode
    # a wrong scale would show: the modes' gradient norms differ from one another by far more
    norms = [row[False][0] for row in rows]
    assert max(norms) > 1.5 * min(norms)
