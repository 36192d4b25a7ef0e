"""Advantage estimators and reward-side helpers against numbers worked out by hand."""

import pytest
import torch

from rlvr.learners.advantages import (
    compute_advantages,
    dynamic_sampling_filter,
    group_rows,
    masked_mean,
    masked_whiten,
    overlong_filter,
    overlong_penalty,
    response_overlong_penalty,
    sampled_turn_lengths,
)

T = torch.tensor


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a.float(), torch.as_tensor(b, dtype=torch.float32), atol=atol, rtol=0)


# ----------------------------------------------------------------------------- GRPO


def test_grpo_group_normalisation_padding_and_all_equal_group():
    # group 0: r = [1, 0, 0, 0]: mean 0.25; unbiased var = (0.75^2 + 3 * 0.25^2) / 3 = 0.25,
    #   std 0.5 -> A = [0.75, -0.25, -0.25, -0.25] / 0.5 = [1.5, -0.5, -0.5, -0.5]
    # group 1: r = [1, 1, 1, 1]: all equal -> A = 0 (0 / eps)
    rewards = T([1.0, 0, 0, 0, 1, 1, 1, 1])
    mask = T([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0],   # row 3: empty response
              [1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    adv, ret = compute_advantages("grpo", rewards, mask, group_size=4)
    close(adv, [[1.5, 1.5, 0], [-0.5, 0, 0], [-0.5, -0.5, -0.5], [0, 0, 0]] + [[0, 0, 0]] * 4)
    close(ret, adv)
    assert adv.dtype == torch.float32


def test_grpo_pair():
    # r = [2, 0]: mean 1, unbiased std = sqrt((1 + 1) / 1) = sqrt(2) -> A = +-1/sqrt(2)
    adv, _ = compute_advantages("grpo", T([2.0, 0.0]), torch.ones(2, 2), group_size=2)
    close(adv, [[0.707107] * 2, [-0.707107] * 2])


def test_grpo_needs_groups():
    with pytest.raises(ValueError, match="group_size"):
        compute_advantages("grpo", T([1.0, 0.0]), torch.ones(2, 1), group_size=1)
    with pytest.raises(ValueError, match="whole number of groups"):
        compute_advantages("grpo", T([1.0, 0.0, 1.0]), torch.ones(3, 1), group_size=2)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'grpoo'.*grpo.*rloo"):
        compute_advantages("grpoo", T([1.0, 0.0]), torch.ones(2, 1), group_size=2)


def test_outcome_estimators_refuse_token_rewards():
    with pytest.raises(ValueError, match="outcome rewards only"):
        compute_advantages("grpo", T([1.0, 0.0]), torch.ones(2, 2), 2, token_rewards=torch.zeros(2, 2))


# ----------------------------------------------------------------------------- Dr. GRPO, RLOO


def test_dr_grpo_centres_without_std():
    # r = [1, 0, 0, 0], mean 0.25 -> A = r - 0.25; all-equal group -> 0
    adv, _ = compute_advantages("dr_grpo", T([1.0, 0, 0, 0, 3, 3, 3, 3]), torch.ones(8, 2), group_size=4)
    close(adv[:, 0], [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    close(adv[:, 1], adv[:, 0])


def test_rloo_leave_one_out():
    # group [1, 0, 0, 0]: baselines (mean of the other three) = [0, 1/3, 1/3, 1/3]
    #   -> A = [1, -1/3, -1/3, -1/3]
    # group [1, 1, 0, 0]: baselines [1/3, 1/3, 2/3, 2/3] -> A = [2/3, 2/3, -2/3, -2/3]
    #   (cross-check: G/(G-1) * (r - mean) = 4/3 * +-0.5)
    # group [2, 2, 2, 2]: 0; padding stays 0
    rewards = T([1.0, 0, 0, 0, 1, 1, 0, 0, 2, 2, 2, 2])
    mask = torch.ones(12, 2)
    mask[1, 1] = 0
    adv, _ = compute_advantages("rloo", rewards, mask, group_size=4)
    close(adv[:, 0], [1, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3, 0, 0, 0, 0])
    assert adv[1, 1] == 0


# ----------------------------------------------------------------------------- REINFORCE++


def test_reinforce_pp_global_whitening():
    # rewards [1, 0]; row 1 is padded after 2 tokens. gamma = 1, no KL:
    # returns row 0 = [1, 1, 1], row 1 = [0, 0, (pad)]
    # valid tokens {1, 1, 1, 0, 0}: mean 0.6, population var (3 * 0.16 + 2 * 0.36) / 5 = 0.24
    #   std 0.489898 -> A = 0.4 / 0.489898 = 0.816497 and -0.6 / 0.489898 = -1.224745
    mask = T([[1.0, 1, 1], [1, 1, 0]])
    adv, ret = compute_advantages("reinforce_pp", T([1.0, 0.0]), mask, group_size=2)
    close(ret, [[1, 1, 1], [0, 0, 0]])
    close(adv, [[0.816497] * 3, [-1.224745, -1.224745, 0]])


def test_reinforce_pp_with_kl_in_reward_and_discount():
    # token_rewards = -0.1 * KL with KL = [[1, 0, 2], [0, 1, 9 (pad)]]; outcome [1, 0] on the last
    # valid token -> r = [[-0.1, 0, 0.8], [0, -0.1, (pad)]]. gamma = 0.5:
    #   row 0: G2 = 0.8, G1 = 0 + 0.5 * 0.8 = 0.4, G0 = -0.1 + 0.5 * 0.4 = 0.1
    #   row 1: G1 = -0.1, G0 = 0 + 0.5 * -0.1 = -0.05
    # valid {0.1, 0.4, 0.8, -0.05, -0.1}: mean 0.23, deviations {-.13, .17, .57, -.28, -.33},
    #   var = (0.0169 + 0.0289 + 0.3249 + 0.0784 + 0.1089) / 5 = 0.1116, std 0.334066
    mask = T([[1.0, 1, 1], [1, 1, 0]])
    kl = T([[1.0, 0, 2], [0, 1, 9]])
    adv, ret = compute_advantages("reinforce_pp", T([1.0, 0.0]), mask, 2, token_rewards=-0.1 * kl, gamma=0.5)
    close(ret, [[0.1, 0.4, 0.8], [-0.05, -0.1, 0]])
    close(adv, [[-0.389145, 0.508882, 1.706250], [-0.838158, -0.987829, 0]])


def test_reinforce_pp_baseline_subtracts_group_mean_then_whitens():
    # groups [1, 0] and [1, 1] -> centred [0.5, -0.5, 0, 0]; gamma 1, T = 2 -> returns per row constant
    # valid tokens {.5, .5, -.5, -.5, 0, 0, 0, 0}: mean 0, var 1/8, std 0.353553 -> A = +-1.414214
    adv, ret = compute_advantages("reinforce_pp_baseline", T([1.0, 0, 1, 1]), torch.ones(4, 2), group_size=2)
    close(ret, [[0.5, 0.5], [-0.5, -0.5], [0, 0], [0, 0]])
    close(adv, [[1.414214] * 2, [-1.414214] * 2, [0, 0], [0, 0]])


# ----------------------------------------------------------------------------- GAE


def test_gae_gamma_lam_one_is_return_minus_value():
    # r = [0, 0, 1], V = [0.5, 0.6, 0.7]: deltas t2 = 1 - 0.7 = 0.3, t1 = 0.7 - 0.6 = 0.1,
    # t0 = 0.6 - 0.5 = 0.1 -> A = [0.5, 0.4, 0.3] (= 1 - V), returns = A + V = [1, 1, 1]
    v = T([[0.5, 0.6, 0.7]])
    adv, ret = compute_advantages("gae", T([1.0]), torch.ones(1, 3), 1, values=v, whiten=False)
    close(adv, [[0.5, 0.4, 0.3]])
    close(ret, [[1.0, 1.0, 1.0]])


def test_gae_two_sequences_discounted_with_padding():
    # gamma 0.9, lam 0.8 (gamma * lam = 0.72)
    # row 0: r = [0, 0, 1], V = [0.5, 0.6, 0.7]
    #   t2: delta = 1 - 0.7 = 0.3                       A = 0.3
    #   t1: delta = 0.9 * 0.7 - 0.6 = 0.03              A = 0.03 + 0.72 * 0.3 = 0.246
    #   t0: delta = 0.9 * 0.6 - 0.5 = 0.04              A = 0.04 + 0.72 * 0.246 = 0.21712
    # row 1: r = [0, 0.5, pad], V = [0.2, 0.4, 9 (pad, must not leak in)]
    #   t1: delta = 0.5 - 0.4 = 0.1                     A = 0.1
    #   t0: delta = 0.9 * 0.4 - 0.2 = 0.16              A = 0.16 + 0.72 * 0.1 = 0.232
    v = T([[0.5, 0.6, 0.7], [0.2, 0.4, 9.0]])
    mask = T([[1.0, 1, 1], [1, 1, 0]])
    adv, ret = compute_advantages("gae", T([1.0, 0.5]), mask, 1, values=v, gamma=0.9, lam=0.8, whiten=False)
    close(adv, [[0.21712, 0.246, 0.3], [0.232, 0.1, 0]])
    close(ret, [[0.71712, 0.846, 1.0], [0.432, 0.5, 0]])
    # default: advantages whitened over the 5 valid tokens, returns unchanged
    adv_w, ret_w = compute_advantages("gae", T([1.0, 0.5]), mask, 1, values=v, gamma=0.9, lam=0.8)
    close(ret_w, ret)
    valid = adv_w[mask.bool()]
    close(valid.mean(), 0.0)
    close(valid.pow(2).mean().sqrt(), 1.0, atol=1e-4)
    assert adv_w[1, 2] == 0


def test_gae_kl_token_rewards_and_masked_middle_tokens():
    # KL token rewards -0.1 on each of 3 tokens, outcome 1, gamma = lam = 1:
    #   A_t = (sum of r from t on) - V_t: t0 = 0.7 - 0.5, t1 = 0.8 - 0.6, t2 = 0.9 - 0.7 -> all 0.2
    v = T([[0.5, 0.6, 0.7]])
    adv, _ = compute_advantages("gae", T([1.0]), torch.ones(1, 3), 1, values=v,
                                token_rewards=torch.full((1, 3), -0.1), whiten=False)
    close(adv, [[0.2, 0.2, 0.2]])
    # a masked middle token (e.g. tool output) is skipped: t2: A = 1 - 0.7 = 0.3;
    # t0: delta = V_2 - V_0 = 0.2, A = 0.2 + 0.3 = 0.5
    v = T([[0.5, 9.0, 0.7]])
    adv, _ = compute_advantages("gae", T([1.0]), T([[1.0, 0, 1]]), 1, values=v, whiten=False)
    close(adv, [[0.5, 0, 0.3]])


def test_gae_needs_values():
    with pytest.raises(ValueError, match="values"):
        compute_advantages("gae", T([1.0]), torch.ones(1, 2), 1)


# ----------------------------------------------------------------------------- masked stats


def test_masked_mean_and_whiten():
    # valid [1, 2, 3]: mean 2, population std sqrt(2/3) = 0.816497
    x, m = T([1.0, 2, 3, 100]), T([1.0, 1, 1, 0])
    close(masked_mean(x, m), 2.0)
    close(masked_whiten(x, m), [-1.224745, 0, 1.224745, 0])
    close(masked_mean(T([[1.0, 5], [2, 2]]), T([[1.0, 0], [0, 0]]), dim=-1), [1.0, 0.0])


def _two_ranks(fn):
    """Run fn(rank, all_reduce) on two threads whose all_reduce sums a tensor over both, as
    torch.distributed.all_reduce does over two learner ranks."""
    import threading

    barrier, slots, results = threading.Barrier(2), [None, None], [None, None]

    def all_reduce(rank):
        def reduce(t):
            slots[rank] = t.clone()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()  # both have read the slots before either writes the next statistic
            return total
        return reduce

    threads = [threading.Thread(target=lambda r=r: results.__setitem__(r, fn(r, all_reduce(r)))) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return results


@pytest.mark.parametrize("name", ["gae", "reinforce_pp"])
def test_batch_whitening_over_shards_equals_whole_batch(name):
    # Two learner ranks each hold half of the batch; with all_reduce the halves are whitened
    # with the whole batch's mean and std, as one rank holding everything would.
    rewards, mask = T([1.0, 0, 0, 1]), T([[1.0, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    values = T([[0.1, 0.5, 0], [0.2, 0.3, 0.4], [0.9, 0, 0], [0.0, 0.7, 0]])
    kw = lambda s: {"values": values[s]} if name == "gae" else {}
    whole, _ = compute_advantages(name, rewards, mask, 1, **kw(slice(None)))
    halves = [slice(0, 2), slice(2, 4)]
    alone = torch.cat([compute_advantages(name, rewards[s], mask[s], 1, **kw(s))[0] for s in halves])
    assert (alone - whole).abs().max() > 0.1  # shard-local whitening differs: the test can fail
    sharded = _two_ranks(lambda r, red: compute_advantages(name, rewards[halves[r]], mask[halves[r]], 1,
                                                           all_reduce=red, **kw(halves[r]))[0])
    close(torch.cat(sharded), whole)


# ----------------------------------------------------------------------------- DAPO extras


def test_dynamic_sampling_filter_keeps_mixed_groups():
    # groups of 2: [1,1] agree, [0,1] mixed, [0,0] agree, [0.5,1] mixed -> keep groups 1 and 3
    kept = dynamic_sampling_filter(T([1.0, 1, 0, 1, 0, 0, 0.5, 1]), group_size=2)
    assert kept.tolist() == [1, 3]
    assert group_rows(kept, 2).tolist() == [2, 3, 6, 7]


def test_overlong_penalty_soft_ramp():
    # max_len 20, buffer 4 -> ramp starts after 16: (16 - L) / 4, floor -1
    lengths = T([10, 16, 17, 18, 20, 25])
    close(overlong_penalty(lengths, 20, 4), [0, 0, -0.25, -0.5, -1, -1])
    close(overlong_penalty(lengths, 20, 4, penalty_factor=0.5), [0, 0, -0.125, -0.25, -0.5, -0.5])


def test_overlong_penalty_counts_generated_turns_not_observations():
    """Issue 21, finding 4: 3 turns of 150 sampled tokens + 2 tool observations of 200 (850 ids) with a
    per-turn max of 512 and a buffer of 128: no turn came near its limit, so no penalty; a turn cut at
    the limit is still punished in full, and a single-turn response is judged on its whole length."""
    turns = [1] * 150 + [0] * 200 + [1] * 150 + [0] * 200 + [1] * 150
    cut = [1] * 150 + [0] * 200 + [1] * 512
    assert sampled_turn_lengths(len(turns), turns) == [150, 150, 150]
    assert sampled_turn_lengths(5, None) == [5] and sampled_turn_lengths(0, []) == [0]
    pen = response_overlong_penalty([[7] * len(turns), [7] * len(cut), [7] * 448, [7] * 100],
                                    [turns, cut, None, None], 512, 128)
    close(pen, [0.0, -1.0, -0.5, 0.0])


def test_overlong_filter_masks_truncated_completions():
    # row 1 hit the length limit: its loss mask goes to 0, so GRPO gives it no advantage,
    # while its reward still counts in the group statistics (A of row 0 is as in the 4-sample case)
    mask = torch.ones(4, 3)
    truncated = T([False, True, False, False])
    fmask = overlong_filter(mask, truncated)
    close(fmask.sum(-1), [3, 0, 3, 3])
    adv, _ = compute_advantages("grpo", T([1.0, 0, 0, 0]), fmask, group_size=4)
    close(adv[:, 0], [1.5, 0, -0.5, -0.5])


def test_registry_refuses_duplicate_names():
    from rlvr.learners.advantages import register_advantage
    from rlvr.learners.losses import register_policy_loss

    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda *a, **k: None)
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("ppo")(lambda *a, **k: None)
