"""The served policy's trainer: RustyWorm's /train updates and published checkpoints, pushed into one engine.

The policy service (serve.app) renders each EvolutionTrajectory as one token sequence (the persona prompt,
then the apply_delta call written from the action, the only policy tokens) and calls `update`:
- importance weights: each usable weight (finite and > 0) divided by the mean of the usable ones, so they
  average 1 and the loss keeps its scale; the others are dropped (RustyWorm's own normalisation min-max
  scales, divides by the sum and then prunes below 0.3 of that, which drops almost everything);
- advantage: learner.advantages.weighted_advantages, the reward normalised within the request with the
  importance weights, A_i = (r_i - mean_w r) / (std_w r + eps) (a zero-sum baseline, no critic);
- loss: learner.losses.rl_loss (MINIRL or GRPO) with the normalised importance weights as sample weights,
  in the learner's own optimizer step (learner.optimizer: micro-batches, clip, a non-finite step skipped).
The actions were chosen by RustyWorm, not sampled from this model, so there are no behaviour logprobs: the
update starts from the current weights (ratio 1) and the importance weights are the off-policy correction.

One PolicyTrainer actor serves an application (all its replicas), so updates and checkpoint loads happen one
at a time and every new version reaches the engine in order. The service reaches it only through its actor
handle (serve imports nothing from learner); checkpoint facts it reads itself (rollout.models.checkpoints).
The engine is the served model's (serve.llm_server.ServedEngine): blocking get_policy_version() and
load_weights(payload, version) calls, each with its own deadline. A published LoRA checkpoint reaches it as
merged weights (base + adapters), so the served engine needs no LoRA support, or, when it serves adapters
(serve.lora), as its adapters (load_adapter), and so do the /train updates of that checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import ray
import torch
from pydantic import Field
from learner.advantages import weighted_advantages
from learner.batch import TrainBatch, token_logprobs
from learner.lora import is_lora, load_policy_model, lora_adapter, policy_state_dict
from learner.losses import PolicyLossConfig, loss_denominator, rl_loss
from learner.optimizer import OptimizerConfig, build_optimizer, micro_batches, optimizer_step
from rollout.data.trajectory import Trajectory
from rollout.engine import serialize_state_dict


class OnlineTrainerConfig(OptimizerConfig):
    """The /train policy update: one AdamW step per request, with the learner's optimizer fields."""

    num_cpus: float = Field(1.0, ge=0, description="Ray CPUs reserved by the trainer actor")
    num_gpus: float = Field(0.0, ge=0, description="> 0 trains on a GPU")
    sync_timeout_s: float = Field(120.0, gt=0, description="deadline for pushing new weights into the engine")


def normalise_importance_weights(weights: Sequence[float | None]) -> list[float]:
    """Usable weights (finite, > 0) divided by their mean; unusable ones (<= 0, NaN, inf, null) become 0."""
    kept = [w if w is not None and math.isfinite(w) and w > 0 else 0.0 for w in weights]
    usable = sum(w > 0 for w in kept)
    if not usable:
        return kept
    mean = sum(kept) / usable
    return [w / mean for w in kept]


class PolicyTrainer:
    """A plain class; start_policy_trainer makes it a Ray actor. Holds the engine it trains for; the model
    copy is loaded on the first update or checkpoint load."""

    def __init__(self, model_path: str, config: OnlineTrainerConfig, engine: Any) -> None:
        self.model_path = model_path
        self.config = config
        self.engine = engine
        self.device = torch.device("cuda" if config.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.loaded: tuple[str, int] | None = None  # the published (checkpoint, version) last loaded

    def get_engine(self) -> Any:
        return self.engine

    def _load(self, model_dir: str) -> None:
        """A model, or a LoRA checkpoint (then /train updates its adapters only). Eval mode: dropout off, so
        the scored pass equals the engine's forward pass."""
        self.model = load_policy_model(model_dir).to(self.device).eval()
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], self.config)

    def _push(self, policy_version: int) -> int:
        """The model's weights to the engine as `policy_version`: a LoRA model's adapters alone when the engine
        serves adapters (serve.lora), otherwise the full (merged) weights."""
        assert self.model is not None
        if is_lora(self.model) and self.engine.serves_adapters:
            loaded = self.engine.load_adapter(lora_adapter(self.model), policy_version)
        else:
            loaded = self.engine.load_weights(serialize_state_dict(policy_state_dict(self.model)), policy_version)
        if loaded != policy_version:
            raise RuntimeError(f"weight push: the engine serves version {loaded}, expected {policy_version}")
        return policy_version

    def load_checkpoint(self, model_dir: str, policy_version: int) -> int:
        """Serve these weights as `policy_version` (a fresh optimizer: a new lineage). Loading the same
        (checkpoint, version) again does nothing, so every replica may ask."""
        if self.loaded != (model_dir, policy_version):
            self._load(model_dir)
            self._push(policy_version)
            self.loaded = (model_dir, policy_version)
        return policy_version

    def update(
        self,
        trajectories: list[Trajectory],
        importance_weights: list[float | None],
        loss_type: Literal["minirl", "grpo"],
    ) -> dict[str, float]:
        """One optimizer step over the trajectories with a usable weight (module doc), then the new weights go
        to the engine as the next policy version. Nothing usable, or rewards that do not vary: no step (no
        learning signal), loss 0 and the engine's current version."""
        start = time.perf_counter()
        weights = normalise_importance_weights(importance_weights)
        used = [(t, w) for t, w in zip(trajectories, weights, strict=True) if w > 0]
        advantages = weighted_advantages([t.total_reward for t, _ in used], [w for _, w in used]) if used else None
        if advantages is None:
            version = self.engine.get_policy_version()
            return {"loss": 0.0, "num_trajectories_used": 0.0, "policy_version": float(version), "grad_norm": 0.0}
        if self.model is None:
            self._load(self.model_path)
        assert self.model is not None and self.optimizer is not None
        loss_config = PolicyLossConfig(loss_type=loss_type, tis_cap=None)
        trajectories = [t for t, _ in used]
        denominator = loss_denominator([t.num_policy_tokens for t in trajectories], loss_config.aggregation)
        batches = micro_batches(
            trajectories, advantages, [w for _, w in used], self.config.micro_batch_size, self.device
        )

        def loss_fn(index: int, batch: TrainBatch, logprobs: torch.Tensor) -> tuple[torch.Tensor, dict]:
            return rl_loss(
                logprobs,
                logprobs.detach(),
                batch.advantages,
                batch.loss_mask,
                loss_config,
                denominator=denominator,
                sample_weights=batch.sample_weights,
            )

        def score(model: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
            return token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)

        grad_norm, parts = optimizer_step(
            self.model, self.optimizer, batches, score, loss_fn, self.config.lr, self.config.grad_clip
        )
        # The learner's rule: a non-finite gradient skips the step, the weights and the version stay.
        stepped = math.isfinite(grad_norm)
        current = self.engine.get_policy_version()
        version = self._push(current + 1) if stepped else current
        return {
            "loss": sum(part["loss"] for part in parts),
            "num_trajectories_used": float(len(used)),
            "policy_version": float(version),
            "grad_norm": grad_norm,
            "nonfinite_grad_steps": float(not stepped),
            "update_time_s": time.perf_counter() - start,
        }


def start_policy_trainer(model_path: str, config: OnlineTrainerConfig, engine: Any) -> Any:
    """The PolicyTrainer actor for one served application, training for `engine` (module doc)."""
    actor_class = ray.remote(num_cpus=config.num_cpus, num_gpus=config.num_gpus)(PolicyTrainer)
    trainer = actor_class.remote(model_path, config, engine)
    ray.get(trainer.get_engine.remote())  # started, or the error now
    return trainer
