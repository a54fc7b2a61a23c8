"""Advantages and every loss variant against numbers worked out by hand on tiny tensors.

Ratios are set exactly: old logprobs are chosen, and logprobs = old + log(r).
"""

import math

import numpy as np
import pytest
import torch

from learner.advantages import AdvantageConfig, group_advantages
from learner.losses import (
    PolicyLossConfig,
    aggregate,
    kl_penalty,
    loss_denominator,
    rl_loss,
    sft_loss,
    tis_weights,
)

# ---------------------------------------------------------------- advantages

REWARDS = [1.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.5, 1.5]
GROUPS = ["a", "a", "a", "b", "b", "b", "c", "c"]


def test_grpo_advantages_divide_by_sample_std_and_drop_flat_groups():
    result = group_advantages(REWARDS, GROUPS, AdvantageConfig(estimator="grpo", eps=0.0))
    # group a: mean 1/3, sample std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    # group c: mean 1, sample std sqrt((0.5^2 + 0.5^2) / 1) = sqrt(1/2)
    expected = [1.1547005, -0.5773503, -0.5773503, 0.0, 0.0, 0.0, -0.7071068, 0.7071068]
    np.testing.assert_allclose(result.advantages, expected, atol=1e-6)
    assert result.keep.tolist() == [True, True, True, False, False, False, True, True]
    assert (result.num_groups, result.num_dropped_groups) == (3, 1)


def test_grpo_eps_is_added_to_std():
    result = group_advantages([0.0, 1.0], ["g", "g"], AdvantageConfig(eps=0.5))
    # mean 0.5, sample std sqrt(0.5) = 0.7071068; (1 - 0.5) / (0.7071068 + 0.5)
    np.testing.assert_allclose(result.advantages, [-0.4142136, 0.4142136], atol=1e-6)


def test_dr_grpo_advantages_do_not_divide_by_std():
    result = group_advantages(REWARDS, GROUPS, AdvantageConfig(normalize_by_std=False))
    expected = [2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0, -0.5, 0.5]
    np.testing.assert_allclose(result.advantages, expected, atol=1e-9)


def test_leave_one_out_advantages():
    result = group_advantages(REWARDS, GROUPS, AdvantageConfig(estimator="loo"))
    # a: 1 - mean(0, 0), 0 - mean(1, 0), 0 - mean(1, 0);  c: 0.5 - 1.5, 1.5 - 0.5
    expected = [1.0, -0.5, -0.5, 0.0, 0.0, 0.0, -1.0, 1.0]
    np.testing.assert_allclose(result.advantages, expected, atol=1e-9)


def test_flat_groups_kept_when_asked():
    result = group_advantages(REWARDS, GROUPS, AdvantageConfig(drop_low_spread=False))
    assert result.keep.all()
    assert result.num_dropped_groups == 0
    np.testing.assert_allclose(result.advantages[3:6], [0.0, 0.0, 0.0])


def test_min_spread_drops_groups_below_it():
    # spans: a 1.0, b 0.0, c 1.0 -> with min_spread 1.5 every group is dropped
    result = group_advantages(REWARDS, GROUPS, AdvantageConfig(min_spread=1.5))
    assert not result.keep.any()
    assert result.num_dropped_groups == 3
    # with min_spread 1.0, spans of exactly 1.0 are kept (strictly below is dropped)
    assert group_advantages(REWARDS, GROUPS, AdvantageConfig(min_spread=1.0)).num_dropped_groups == 1


def test_single_episode_group_has_no_baseline():
    dropped = group_advantages([3.0], ["solo"])
    assert not dropped.keep[0]
    kept = group_advantages([3.0], ["solo"], AdvantageConfig(estimator="loo", drop_low_spread=False))
    assert kept.keep[0] and kept.advantages[0] == 0.0


def test_advantage_input_errors():
    with pytest.raises(ValueError, match="group ids"):
        group_advantages([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, float("nan")], ["a", "a"])
    with pytest.raises(ValueError, match="estimator"):
        AdvantageConfig(estimator="ppo")


# ---------------------------------------------------------------- GRPO clipped ratio

# Two sequences x 3 tokens. Sequence 0 has A = +1, sequence 1 has A = -2 and its last token is not a
# policy token.
RATIOS = torch.tensor([[1.5, 0.9, 1.0], [0.5, 4.0, 1.1]])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -3.0, -1.0]])
ADVANTAGES = torch.tensor([1.0, -2.0])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def _logprobs() -> torch.Tensor:
    return (OLD + torch.log(RATIOS)).requires_grad_(True)


def test_grpo_clip_and_dual_clip_token_mean():
    logprobs = _logprobs()
    config = PolicyLossConfig(clip_low=0.2, clip_high=0.2, dual_clip=3.0, tis_cap=None)
    loss, metrics = rl_loss(logprobs, OLD, ADVANTAGES, MASK, config)
    # seq 0 (A=1):  r=1.5 -> max(-1.5, -1.2) = -1.2 (clipped); r=0.9 -> -0.9; r=1.0 -> -1.0
    # seq 1 (A=-2): r=0.5 -> max(1.0, 1.6) = 1.6 (clipped); r=4.0 -> max(8, 2.4) = 8, dual clip 2*3 = 6
    assert loss.item() == pytest.approx((-1.2 - 0.9 - 1.0 + 1.6 + 6.0) / 5, abs=1e-6)
    assert metrics["clip_fraction"] == pytest.approx(2 / 5)
    assert metrics["dual_clip_fraction"] == pytest.approx(1 / 5)
    assert metrics["policy_tokens"] == 5
    loss.backward()
    # d(-A r)/d logp = -A r for tokens that are not clipped; clipped ones (constants) get no gradient.
    expected_grad = torch.tensor([[0.0, -0.9 / 5, -1.0 / 5], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(logprobs.grad, expected_grad)


def test_grpo_without_dual_clip():
    logprobs = _logprobs()
    config = PolicyLossConfig(dual_clip=None, tis_cap=None)
    loss, metrics = rl_loss(logprobs, OLD, ADVANTAGES, MASK, config)
    assert loss.item() == pytest.approx((-1.2 - 0.9 - 1.0 + 1.6 + 8.0) / 5, abs=1e-6)
    assert metrics["dual_clip_fraction"] == 0.0
    loss.backward()
    assert logprobs.grad[1, 1].item() == pytest.approx(2.0 * 4.0 / 5)


def test_grpo_asymmetric_clip():
    config = PolicyLossConfig(clip_low=0.4, clip_high=0.28, tis_cap=None)
    loss, _ = rl_loss(_logprobs(), OLD, ADVANTAGES, MASK, config)
    # r=1.5 clipped to 1.28 -> -1.28; r=0.5 clipped to 0.6 -> 2 * 0.6 = 1.2
    assert loss.item() == pytest.approx((-1.28 - 0.9 - 1.0 + 1.2 + 6.0) / 5, abs=1e-6)


# ---------------------------------------------------------------- aggregations


@pytest.mark.parametrize(
    ("aggregation", "norm_length", "expected"),
    [
        ("token-mean", None, (-3.1 + 7.6) / 5),
        # per-sequence token means -3.1/3 and 7.6/2, averaged over 2 sequences
        ("seq-mean-token-mean", None, (-3.1 / 3 + 7.6 / 2) / 2),
        # per-sequence sums over the fixed length 4, averaged over 2 sequences
        ("seq-mean-token-sum-norm", 4, (-3.1 / 4 + 7.6 / 4) / 2),
    ],
)
def test_aggregations(aggregation, norm_length, expected):
    config = PolicyLossConfig(aggregation=aggregation, norm_length=norm_length, tis_cap=None)
    loss, _ = rl_loss(_logprobs(), OLD, ADVANTAGES, MASK, config)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_parts_with_the_global_denominator_add_up_to_the_whole(aggregation):
    """What makes N ranks equal 1 rank: each part divides by the denominator of the whole batch."""
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    whole = aggregate(values, mask, aggregation, norm_length=4)
    denominator = loss_denominator([2, 1, 0], aggregation)
    parts = aggregate(values[:1], mask[:1], aggregation, denominator, 4) + aggregate(
        values[1:], mask[1:], aggregation, denominator, 4
    )
    assert parts.item() == pytest.approx(whole.item())


def test_loss_denominator_counts_tokens_or_sequences_with_tokens():
    assert loss_denominator([3, 0, 2], "token-mean") == 5.0
    assert loss_denominator([3, 0, 2], "seq-mean-token-mean") == 2.0
    assert loss_denominator([3, 0, 2], "seq-mean-token-sum-norm") == 2.0
    values = torch.tensor([[2.0, 4.0]])
    assert aggregate(values, torch.ones(1, 2), "token-mean", denominator=10.0).item() == pytest.approx(0.6)


# ---------------------------------------------------------------- MINIRL


def test_minirl_masks_tokens_that_moved_too_far():
    logprobs = _logprobs()
    config = PolicyLossConfig(loss_type="minirl", minirl_lower=0.8, minirl_upper=1.3, tis_cap=None)
    loss, metrics = rl_loss(logprobs, OLD, ADVANTAGES, MASK, config)
    # seq 0 (A=1):  r=1.5 > 1.3 with A > 0 -> masked; r=0.9 -> -0.9 * 1 * logp; r=1.0 -> -1 * 1 * logp
    # seq 1 (A=-2): r=0.5 < 0.8 with A < 0 -> masked; r=4.0 -> -4 * (-2) * logp (not masked: A < 0)
    token_losses = [
        -0.9 * 1.0 * (-2.0 + math.log(0.9)),
        -1.0 * 1.0 * (-0.5 + math.log(1.0)),
        -4.0 * -2.0 * (-3.0 + math.log(4.0)),
    ]
    assert loss.item() == pytest.approx(sum(token_losses) / 5, abs=1e-5)
    assert metrics["masked_fraction"] == pytest.approx(2 / 5)
    loss.backward()
    # the ratio is a constant (stop-gradient): d/d logp = -r A for kept tokens, 0 for masked ones
    expected_grad = torch.tensor([[0.0, -0.9 / 5, -1.0 / 5], [0.0, 8.0 / 5, 0.0]])
    torch.testing.assert_close(logprobs.grad, expected_grad)


def test_minirl_seq_mean_token_sum_norm():
    config = PolicyLossConfig(
        loss_type="minirl", aggregation="seq-mean-token-sum-norm", norm_length=10, tis_cap=None
    )
    loss, _ = rl_loss(_logprobs(), OLD, ADVANTAGES, MASK, config)
    seq0 = -0.9 * (-2.0 + math.log(0.9)) + 0.5
    seq1 = 8.0 * (-3.0 + math.log(4.0))
    assert loss.item() == pytest.approx((seq0 / 10 + seq1 / 10) / 2, abs=1e-5)


# ---------------------------------------------------------------- KL, TIS, sample weights


def test_kl_estimators():
    logprobs = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(kl_penalty(logprobs, ref, "k1"), torch.tensor([[0.5, -1.0]]))
    # k3 = exp(ref - logp) - (ref - logp) - 1: exp(-0.5) + 0.5 - 1 and exp(1) - 1 - 1
    torch.testing.assert_close(kl_penalty(logprobs, ref, "k3"), torch.tensor([[0.1065307, 0.7182818]]))


def test_kl_term_is_added_with_its_coefficient():
    logprobs = torch.tensor([[0.0, -1.0, -2.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    config = PolicyLossConfig(kl_coef=0.1, kl_estimator="k3", tis_cap=None)
    loss, metrics = rl_loss(logprobs, logprobs, torch.tensor([0.0]), mask, config, ref_logprobs=ref)
    assert loss.item() == pytest.approx(0.1 * (0.1065307 + 0.7182818) / 2, abs=1e-6)
    assert metrics["kl"] == pytest.approx((0.1065307 + 0.7182818) / 2, abs=1e-6)
    config_k1 = PolicyLossConfig(kl_coef=0.5, kl_estimator="k1", tis_cap=None)
    loss_k1, _ = rl_loss(logprobs, logprobs, torch.tensor([0.0]), mask, config_k1, ref_logprobs=ref)
    assert loss_k1.item() == pytest.approx(0.5 * (0.5 - 1.0) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="ref_logprobs"):
        rl_loss(logprobs, logprobs, torch.tensor([0.0]), mask, config)


def test_truncated_importance_sampling():
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    engine = torch.tensor([[-2.0, -1.9, -0.5]])
    # exp(1) = 2.718 capped at 2; exp(-0.1) = 0.9048374; exp(0) = 1
    torch.testing.assert_close(tis_weights(old, engine, cap=2.0), torch.tensor([[2.0, 0.9048374, 1.0]]))
    config = PolicyLossConfig(tis_cap=2.0)
    loss, metrics = rl_loss(old, old, torch.tensor([1.0]), torch.ones(1, 3), config, engine_logprobs=engine)
    # ratio 1, A = 1: per token -1 * w
    assert loss.item() == pytest.approx(-(2.0 + 0.9048374 + 1.0) / 3, abs=1e-6)
    assert metrics["tis_capped_fraction"] == pytest.approx(1 / 3)
    assert metrics["tis_weight_mean"] == pytest.approx((2.0 + 0.9048374 + 1.0) / 3, abs=1e-6)
    assert metrics["engine_logprob_abs_diff"] == pytest.approx((1.0 + 0.1 + 0.0) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="engine_logprobs"):
        rl_loss(old, old, torch.tensor([1.0]), torch.ones(1, 3), config)


def test_sample_weights_scale_each_sequence():
    logprobs = torch.zeros(2, 2)
    config = PolicyLossConfig(tis_cap=None)
    weights = torch.tensor([2.0, 0.5])
    loss, _ = rl_loss(logprobs, logprobs, torch.ones(2), torch.ones(2, 2), config, sample_weights=weights)
    # ratio 1, A = 1: tokens -2, -2, -0.5, -0.5
    assert loss.item() == pytest.approx(-5.0 / 4)


def test_sft_loss_averages_policy_tokens_only():
    logprobs = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, -3.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    loss, metrics = sft_loss(logprobs, mask)
    assert loss.item() == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    assert metrics["policy_tokens"] == 3


def test_bad_loss_config_is_refused():
    with pytest.raises(ValueError, match="loss_type"):
        PolicyLossConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="norm_length"):
        PolicyLossConfig(aggregation="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="dual_clip"):
        PolicyLossConfig(dual_clip=0.5)
    with pytest.raises(ValueError, match="kl_estimator"):
        PolicyLossConfig(kl_estimator="k2")
