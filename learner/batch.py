"""From Trajectory records to padded tensors, and the one function that scores sequences.

Sequences are right-padded: with a causal model and position ids counted from 0, the logits of the real
tokens do not depend on the padding, so a trajectory scores the same alone or in any micro-batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from rollout.data.trajectory import Trajectory

PAD_TOKEN_ID = 0  # any valid id: padded positions are masked everywhere

T = TypeVar("T")


@dataclass
class TrainBatch:
    input_ids: Tensor  # [batch, seq] long
    attention_mask: Tensor  # [batch, seq] long, 1 on real tokens
    loss_mask: Tensor  # [batch, seq] float, 1 on policy tokens
    engine_logprobs: Tensor  # [batch, seq] float, 0.0 where loss_mask is 0
    advantages: Tensor  # [batch] float
    sample_weights: Tensor  # [batch] float

    def to(self, device: torch.device | str) -> TrainBatch:
        return TrainBatch(**{name: tensor.to(device) for name, tensor in vars(self).items()})


def check_trajectory(trajectory: Trajectory, vocab_size: int | None = None) -> None:
    """Refuse what would fail deep inside a learner rank (where one rank failing leaves the others waiting
    in an all-reduce; an out-of-range id on CUDA even kills the device context)."""
    if not trajectory.token_ids:
        raise ValueError(f"trajectory {trajectory.episode_id} has no tokens")
    if trajectory.loss_mask[0]:
        # The first token has no prefix to be predicted from: it cannot be a policy token.
        raise ValueError(f"trajectory {trajectory.episode_id}: loss_mask[0] must be 0")
    if any(bit not in (0, 1) for bit in trajectory.loss_mask):
        raise ValueError(f"trajectory {trajectory.episode_id}: loss_mask must hold only 0 and 1")
    if vocab_size is not None and not all(0 <= token < vocab_size for token in trajectory.token_ids):
        raise ValueError(f"trajectory {trajectory.episode_id}: token ids must lie in [0, {vocab_size})")
    if not all(math.isfinite(logprob) for logprob in trajectory.logprobs):
        raise ValueError(f"trajectory {trajectory.episode_id}: logprobs must be finite numbers")


def collate(
    trajectories: Sequence[Trajectory],
    advantages: Sequence[float] | None = None,
    sample_weights: Sequence[float] | None = None,
) -> TrainBatch:
    """Right-pad trajectories into one batch. Advantages default to 0, sample weights to 1."""
    if not trajectories:
        raise ValueError("cannot collate an empty list of trajectories")
    n = len(trajectories)
    advantages = [0.0] * n if advantages is None else list(advantages)
    sample_weights = [1.0] * n if sample_weights is None else list(sample_weights)
    if len(advantages) != n or len(sample_weights) != n:
        raise ValueError(
            f"{n} trajectories but {len(advantages)} advantages and {len(sample_weights)} sample weights"
        )
    for trajectory in trajectories:
        check_trajectory(trajectory)

    length = max(len(t.token_ids) for t in trajectories)
    input_ids = torch.full((n, length), PAD_TOKEN_ID, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    loss_mask = torch.zeros((n, length))
    engine_logprobs = torch.zeros((n, length))
    for row, trajectory in enumerate(trajectories):
        size = len(trajectory.token_ids)
        input_ids[row, :size] = torch.tensor(trajectory.token_ids, dtype=torch.long)
        attention_mask[row, :size] = 1
        loss_mask[row, :size] = torch.tensor(trajectory.loss_mask, dtype=torch.float32)
        engine_logprobs[row, :size] = torch.tensor(trajectory.logprobs, dtype=torch.float32)
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        engine_logprobs=engine_logprobs * loss_mask,
        advantages=torch.tensor(advantages, dtype=torch.float32),
        sample_weights=torch.tensor(sample_weights, dtype=torch.float32),
    )


def split_into_chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive chunks of at most `size` items (micro-batches)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def split_evenly(items: Sequence[T], parts: int) -> list[list[T]]:
    """`parts` consecutive slices whose sizes differ by at most one (some may be empty)."""
    if parts < 1:
        raise ValueError(f"number of parts must be >= 1, got {parts}")
    base, extra = divmod(len(items), parts)
    slices, start = [], 0
    for part in range(parts):
        end = start + base + (1 if part < extra else 0)
        slices.append(list(items[start:end]))
        start = end
    return slices


def shared_prefix_length(input_ids: Tensor, attention_mask: Tensor, limit: int) -> int:
    """How many leading tokens every row of a batch shares (at most `limit`, the first position whose logits
    are needed): the episodes of a GRPO group start from the same prompt, usually most of their tokens."""
    if input_ids.shape[0] < 2:
        return 0
    same = ((input_ids == input_ids[:1]) & attention_mask.bool()).all(dim=0)
    differs = (~same).nonzero()
    common = int(differs[0]) if differs.numel() else same.numel()
    return min(common, limit)


def token_logprobs(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor | None = None
) -> Tensor:
    """[batch, seq] log-probability of each token given its prefix; position 0 and padding get 0.

    Aligned with Trajectory.token_ids and Trajectory.logprobs. Logits are upcast to float32 before the
    softmax: bf16 log-probabilities are too coarse for importance ratios. The chosen token's logit minus the
    logsumexp, rather than a full log_softmax: autograd then keeps no second [batch, seq, vocab] tensor, which
    for a 49k vocabulary and 1.5k-token episodes is ~300 MB a sequence.

    With `loss_mask`, only tokens that some row's mask covers are scored (the others get 0): the LM head runs
    on the positions that predict a policy token (transformers' logits_to_keep), not on every prompt and
    observation token, which is most of a step's logits: time, and memory for a large vocabulary.
    The leading tokens all rows share and that predict nothing scored (a group's prompt) then run once, not
    once a row: in a one-turn GRPO batch the prompt is most of the tokens.
    """
    targets = input_ids[:, 1:]
    if loss_mask is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
        positions = torch.arange(targets.shape[1], device=input_ids.device)
        wanted = torch.ones_like(positions, dtype=torch.bool)
    else:
        wanted = loss_mask[:, 1:].bool().any(dim=0)
        positions = wanted.nonzero().squeeze(-1)
        if positions.numel() == 0:  # nothing to score: one position, zeroed below, so the loss has a graph
            positions = torch.zeros(1, dtype=torch.long, device=input_ids.device)
        prefix = shared_prefix_length(input_ids, attention_mask, int(positions[0]))
        past = None
        if prefix:
            # Run the shared prefix once and give every row its keys and values (the gradient of the
            # repeat sums the rows' shares): the rows' scores are those of the full pass.
            past = model(input_ids=input_ids[:1, :prefix], use_cache=True, logits_to_keep=1).past_key_values
            past.batch_repeat_interleave(input_ids.shape[0])
        logits = model(
            input_ids=input_ids[:, prefix:],
            attention_mask=attention_mask,
            past_key_values=past,
            use_cache=past is not None,
            logits_to_keep=positions - prefix,
        ).logits
    logits = logits.float()
    chosen = logits.gather(-1, targets[:, positions].unsqueeze(-1)).squeeze(-1)
    scored = torch.zeros(targets.shape, dtype=logits.dtype, device=logits.device)
    scored[:, positions] = (chosen - torch.logsumexp(logits, dim=-1)) * wanted[positions]
    first = torch.zeros_like(scored[:, :1])
    return torch.cat([first, scored], dim=1) * attention_mask
