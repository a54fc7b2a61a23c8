"""Per-token policy losses on padded [batch, seq] tensors, read top to bottom like CleanRL.

Three log-probabilities of every token meet here:
- `logprobs`: the learner's, under the weights being trained (carries the gradient);
- `old_logprobs`: the learner's under the weights the update started from (the proximal policy of PPO);
- `engine_logprobs`: the inference engine's, recorded while sampling (the behaviour policy).
The ratio r = exp(logprobs - old_logprobs) drives clipping (GRPO) or masking (MINIRL). The engine and the
learner never compute identical numbers (other kernels, precision, a policy one step stale), so the policy
term is multiplied by the truncated importance weight (TIS)
    w_tis = min(exp(old_logprobs - engine_logprobs), tis_cap)   (detached, per token)
which corrects sampling from the engine's distribution while training the learner's, and the cap bounds the
variance. Every term is weighted per sample (importance weights from /train), then aggregated.

Aggregation divides a sum by a denominator: the number of policy tokens ("token-mean") or of sequences (the
two "seq-mean-*" modes). When a batch is split over ranks and micro-batches the caller passes the denominator
of the whole optimizer step (see `loss_denominator`), so every part contributes sum_part / denominator_global
and the parts add up to exactly the loss of the whole batch. Tokens MINIRL masks out contribute zero but stay
in the denominator (AgentCPM does the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
AGGREGATIONS = get_args(Aggregation)


class PolicyLossConfig(BaseModel):
    """The `learner.policy_loss` config section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    loss_type: Literal["grpo", "minirl"] = Field("grpo", description="grpo: clipped ratio; minirl: AgentCPM's")
    clip_low: float = Field(0.2, ge=0, lt=1, description="grpo: ratio clipped to [1 - clip_low, 1 + clip_high]")
    clip_high: float = Field(0.2, ge=0, description="DAPO's clip-higher uses 0.28")
    dual_clip: float | None = Field(
        3.0, gt=1, description="grpo: loss of negative-advantage tokens capped at |A| * dual_clip; null: off"
    )
    minirl_lower: float = Field(0.8, gt=0, le=1, description="minirl: mask tokens with r < lower and A < 0")
    minirl_upper: float = Field(1.3, ge=1, description="minirl: mask tokens with r > upper and A > 0")
    aggregation: Aggregation = "token-mean"
    norm_length: int | None = Field(
        None, ge=1, description='the fixed length of "seq-mean-token-sum-norm" (Dr.GRPO\'s L_max)'
    )
    kl_coef: float = Field(
        0.0, ge=0, description="> 0 loads a frozen reference model and adds kl_coef * KL(policy || reference)"
    )
    kl_estimator: Literal["k1", "k3"] = "k3"
    tis_cap: float | None = Field(2.0, gt=0, description="null turns truncated importance sampling off")

    @model_validator(mode="after")
    def _norm_length_for_sum_norm(self) -> PolicyLossConfig:
        if self.aggregation == "seq-mean-token-sum-norm" and self.norm_length is None:
            raise ValueError("aggregation 'seq-mean-token-sum-norm' needs norm_length >= 1")
        return self


def grpo_token_loss(
    ratio: Tensor, advantages: Tensor, clip_low: float, clip_high: float, dual_clip: float | None
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's pessimistic clipped objective, per token. Returns (loss, clipped, dual_clipped)."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    is_dual_clipped = torch.zeros_like(is_clipped)
    if dual_clip is not None:
        # A < 0 and a huge ratio would make the loss unbounded: cap it (a constant, so no gradient).
        bound = -advantages * dual_clip
        is_dual_clipped = (advantages < 0) & (loss > bound)
        loss = torch.where(is_dual_clipped, bound, loss)
    return loss, is_clipped, is_dual_clipped


def minirl_token_loss(
    logprobs: Tensor, ratio: Tensor, advantages: Tensor, lower: float, upper: float
) -> tuple[Tensor, Tensor]:
    """AgentCPM's MINIRL: -sg(r) * A * log pi, no clipping; tokens whose ratio already moved far in the
    direction the advantage pushes are masked out instead. Returns (loss, kept)."""
    masked = ((ratio > upper) & (advantages > 0)) | ((ratio < lower) & (advantages < 0))
    loss = -ratio.detach() * advantages * logprobs
    return loss * ~masked, ~masked


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy (Schulman's k1/k3)."""
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":  # unbiased and always >= 0
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"unknown kl estimator {estimator!r}")


def tis_weights(old_logprobs: Tensor, engine_logprobs: Tensor, cap: float) -> Tensor:
    """min(pi_learner / pi_engine, cap) per token, detached: the behaviour-policy correction."""
    return torch.exp(old_logprobs - engine_logprobs).clamp(max=cap).detach()


def loss_denominator(policy_token_counts: Sequence[int], aggregation: str) -> float:
    """What `aggregate` divides by, for the whole optimizer step: policy tokens, or sequences that have at
    least one policy token. Computed once over the full batch so the ranks' parts add up correctly."""
    if aggregation == "token-mean":
        return float(sum(policy_token_counts))
    if aggregation in AGGREGATIONS:
        return float(sum(1 for count in policy_token_counts if count > 0))
    raise ValueError(f"unknown aggregation {aggregation!r}")


def aggregate(
    values: Tensor,
    loss_mask: Tensor,
    aggregation: str,
    denominator: float | None = None,
    norm_length: int | None = None,
) -> Tensor:
    """Reduce per-token values [batch, seq] to a scalar; `denominator` defaults to this batch's own."""
    if denominator is None:
        denominator = loss_denominator(loss_mask.sum(dim=1).tolist(), aggregation)
    masked_sum = (values * loss_mask).sum(dim=1)  # [batch]
    if aggregation == "token-mean":
        total = masked_sum.sum()
    elif aggregation == "seq-mean-token-mean":
        total = (masked_sum / loss_mask.sum(dim=1).clamp(min=1)).sum()
    elif aggregation == "seq-mean-token-sum-norm":
        if norm_length is None:
            raise ValueError("aggregation 'seq-mean-token-sum-norm' needs norm_length")
        total = masked_sum.sum() / norm_length
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    return total / max(denominator, 1.0)


def _token_mean(values: Tensor, loss_mask: Tensor) -> float:
    return float((values * loss_mask).sum() / loss_mask.sum().clamp(min=1))


def rl_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    loss_mask: Tensor,
    config: PolicyLossConfig = PolicyLossConfig(),
    *,
    denominator: float | None = None,
    engine_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    sample_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The policy loss of one (micro-)batch. Shapes: [batch, seq] except advantages and sample_weights
    ([batch]). `loss_mask` is 1 on policy tokens. Metrics are means over this batch's policy tokens, except
    loss/pg_loss/kl_loss, which are this batch's additive share of the step's loss (see module doc)."""
    loss_mask = loss_mask.float()
    token_advantages = advantages.unsqueeze(1).expand_as(logprobs)
    ratio = torch.exp(logprobs - old_logprobs)
    metrics: dict[str, float] = {}

    if config.loss_type == "grpo":
        pg, clipped, dual_clipped = grpo_token_loss(
            ratio, token_advantages, config.clip_low, config.clip_high, config.dual_clip
        )
        metrics["clip_fraction"] = _token_mean(clipped.float(), loss_mask)
        metrics["dual_clip_fraction"] = _token_mean(dual_clipped.float(), loss_mask)
    else:
        pg, kept = minirl_token_loss(logprobs, ratio, token_advantages, config.minirl_lower, config.minirl_upper)
        metrics["masked_fraction"] = _token_mean((~kept).float(), loss_mask)

    if config.tis_cap is not None:
        if engine_logprobs is None:
            raise ValueError("tis_cap is set but no engine_logprobs were given")
        weights = tis_weights(old_logprobs, engine_logprobs, config.tis_cap)
        pg = pg * weights
        metrics["tis_weight_mean"] = _token_mean(weights, loss_mask)
        metrics["tis_capped_fraction"] = _token_mean((weights >= config.tis_cap).float(), loss_mask)
    if engine_logprobs is not None:
        metrics["engine_logprob_abs_diff"] = _token_mean((old_logprobs - engine_logprobs).abs(), loss_mask)
        # KL(engine || learner) from the engine's own samples (k3): how far the behaviour policy is off.
        metrics["engine_kl_k3"] = _token_mean(kl_penalty(engine_logprobs, old_logprobs, "k3"), loss_mask)
    if sample_weights is not None:
        pg = pg * sample_weights.unsqueeze(1)

    pg_loss = aggregate(pg, loss_mask, config.aggregation, denominator, config.norm_length)
    loss = pg_loss
    if config.kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 but no ref_logprobs were given")
        kl = kl_penalty(logprobs, ref_logprobs, config.kl_estimator)
        kl_loss = aggregate(kl, loss_mask, config.aggregation, denominator, config.norm_length)
        loss = pg_loss + config.kl_coef * kl_loss
        metrics["kl_loss"] = float(kl_loss.detach())
        metrics["kl"] = _token_mean(kl.detach(), loss_mask)

    metrics["loss"] = float(loss.detach())
    metrics["pg_loss"] = float(pg_loss.detach())
    metrics["ratio_mean"] = _token_mean(ratio.detach(), loss_mask)
    # -log pi of the sampled tokens: an unbiased estimate of the policy's entropy per token (nats), which
    # falls as RL sharpens the policy.
    metrics["entropy"] = _token_mean(-old_logprobs.detach(), loss_mask)
    metrics["policy_tokens"] = float(loss_mask.sum())
    return loss, metrics


def sft_loss(
    logprobs: Tensor, loss_mask: Tensor, denominator: float | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy on the policy tokens only (token mean): imitating an expert's actions, not the prompts
    or the harness observations."""
    loss = aggregate(-logprobs, loss_mask.float(), "token-mean", denominator)
    return loss, {"loss": float(loss.detach()), "policy_tokens": float(loss_mask.sum())}
