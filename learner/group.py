"""The learner actor group: one Ray actor per rank, one device each, gradients all-reduced by DDP.

The driver-side `LearnerGroup` does everything that needs the whole batch: group advantages (groups may
straddle ranks), dropping flat groups, splitting into optimizer steps (mini-batches) and then across ranks,
and the loss denominator of each optimizer step. Each `LearnerWorker` turns its share into micro-batches,
accumulates gradients and steps AdamW. DDP averages gradients over ranks, so every rank scales its loss by
world_size: with global denominators the ranks' losses add up to the loss of the whole batch, and 1 rank or
N ranks make the same update.

Every wait has a deadline (Ray calls, process-group init and collectives): a failed rank raises, never hangs.
After such an error the group is unusable: shut it down and build a new one (from a checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist
from pydantic import Field
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging as transformers_logging

from learner.advantages import AdvantageConfig, group_advantages
from learner.batch import TrainBatch, check_trajectory, collate, split_evenly, token_logprobs
from learner.checkpoint import capture_rng_state, load_checkpoint, save_checkpoint
from learner.lora import LoraConfig, adapter_dropout, apply_lora, lora_adapter, policy_state_dict
from learner.losses import PolicyLossConfig, loss_denominator, rl_loss, sft_loss
from learner.optimizer import LossFn, OptimizerConfig, build_optimizer, micro_batches, optimizer_step
from learner.weight_sync import sync_adapter_through_object_store, sync_through_object_store
from rollout.engine import EngineConfig
from rollout.models.checkpoints import CheckpointState
from rollout.data.trajectory import Trajectory
from rollout.weight_receiver import LoraAdapter

# Metrics that are shares of a sum (add them over micro-batches and ranks); all others are means over
# policy tokens (weight them by policy_tokens).
ADDITIVE_METRICS = ("loss", "pg_loss", "kl_loss", "policy_tokens")


class LearnerConfig(OptimizerConfig):
    """The `learner` config section (cluster/config.py composes it): the optimizer's fields plus these."""

    mini_batches: int = Field(1, ge=1, description="optimizer steps per update; > 1 moves the ratio off 1")
    sft_lr: float = Field(1e-5, gt=0)
    bf16: bool = Field(True, description="bf16 autocast on CUDA (master weights stay fp32); CPU runs fp32")
    seed: int = 0
    num_cpus: int = Field(
        1, ge=1, description="Ray CPUs per learner rank; on CPU also its torch threads (Ray sets OMP_NUM_THREADS)"
    )
    policy_loss: PolicyLossConfig = PolicyLossConfig()
    advantage: AdvantageConfig = AdvantageConfig()
    lora: LoraConfig | None = Field(None, description="train LoRA adapters only (learner.lora); null: every weight")
    setup_timeout_s: float = Field(600.0, gt=0, description="actor start, model load, process-group rendezvous")
    call_timeout_s: float = Field(1800.0, gt=0, description="one update / checkpoint call")
    collective_timeout_s: float = Field(600.0, gt=0, description="one all-reduce waiting for a missing rank")


@dataclass
class StepShard:
    """One rank's share of one optimizer step."""

    trajectories: list[Trajectory]
    advantages: list[float]
    sample_weights: list[float]
    denominator: float  # of the whole optimizer step, over all ranks (losses.loss_denominator)


def combine_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Add the additive metrics, average the others weighted by policy tokens."""
    tokens = sum(part.get("policy_tokens", 0.0) for part in parts)
    combined: dict[str, float] = {}
    for key in {key for part in parts for key in part}:
        values = [(part[key], part.get("policy_tokens", 0.0)) for part in parts if key in part]
        if key in ADDITIVE_METRICS:
            combined[key] = sum(value for value, _ in values)
        else:
            combined[key] = sum(value * weight for value, weight in values) / tokens if tokens else 0.0
    return combined


def flat_group_fraction(rewards: list[float], group_ids: list[str], min_spread: float) -> float:
    """The share of groups whose rewards are all equal (span below min_spread): they give no gradient."""
    groups: dict[str, list[float]] = {}
    for reward, group_id in zip(rewards, group_ids):
        groups.setdefault(group_id, []).append(reward)
    return sum(max(g) - min(g) < min_spread for g in groups.values()) / len(groups)


class LearnerWorker:
    """One learner rank: a plain class that LearnerGroup turns into a Ray actor (one device, one process)."""

    def __init__(self, rank: int, world_size: int, model_path: str, config: LearnerConfig) -> None:
        self.rank = rank
        self.world_size = world_size
        self.model_path = model_path
        self.config = config
        self.use_cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if self.use_cuda else torch.device("cpu")  # Ray assigns GPU 0
        self.step = 0
        transformers_logging.disable_progress_bar()

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()

    def free_port(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            return sock.getsockname()[1]

    def setup(self, master_address: str, master_port: int) -> None:
        if self.use_cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group(
            backend="nccl" if self.use_cuda else "gloo",
            init_method=f"tcp://{master_address}:{master_port}",
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=self.config.collective_timeout_s),
        )
        torch.manual_seed(self.config.seed + self.rank)
        model = self._load_model()
        if self.config.lora is not None:
            model = apply_lora(model, self.config.lora)
        # No buffer sync in forward: the buffers (rotary frequencies) are the checkpoint's constants, and the
        # sync is a collective in every forward, while a rank runs one forward per micro-batch, or two when its
        # rows share a prompt (batch.token_logprobs): ranks would wait on each other's forwards.
        self.model = DistributedDataParallel(
            model, device_ids=[0] if self.use_cuda else None, forward_sync_buffers=False
        )
        self.ref_model = self._load_model().requires_grad_(False) if self.config.policy_loss.kl_coef > 0 else None
        self.reset_optimizer()

    def reset_optimizer(self) -> None:
        """A fresh AdamW (moments and step count at zero). Called between SFT and GRPO: SFT's second moments,
        left by large cross-entropy gradients, would otherwise shrink every RL update for thousands of steps
        (beta2 = 0.999), so the nominal lr would not be the lr the policy moves at."""
        trainable = [param for param in self.model.module.parameters() if param.requires_grad]  # LoRA: adapters
        self.optimizer = build_optimizer(trainable, self.config)

    def _load_model(self) -> torch.nn.Module:
        # from_pretrained leaves the model in eval mode: dropout stays off, so a no-grad pass and the
        # training pass of the same weights give the same logprobs (ratio exactly 1 at the first step).
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        return model.to(self.device).eval()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_cuda and self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _score(self, model: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
        with self._autocast():
            return token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)

    def _micro_batches(self, shard: StepShard) -> list[TrainBatch]:
        return micro_batches(
            shard.trajectories, shard.advantages, shard.sample_weights, self.config.micro_batch_size, self.device
        )

    def _optimizer_step(self, batches: list[TrainBatch], loss_fn: LossFn, lr: float) -> tuple[float, list[dict]]:
        with adapter_dropout(self.model.module):
            grad_norm, parts = optimizer_step(
                self.model, self.optimizer, batches, self._score, loss_fn, lr, self.config.grad_clip, self.world_size
            )
        self.step += math.isfinite(grad_norm)
        return grad_norm, parts

    def update(self, shards: list[StepShard]) -> dict[str, float]:
        """One optimizer step per shard (mini-batch), all with the old logprobs of the starting weights."""
        loss_config = self.config.policy_loss
        batches = [self._micro_batches(shard) for shard in shards]
        # Steps after the first need the logprobs of the weights the update started from, scored before the
        # first step changes them; the first step's own are those weights' (its logprobs, detached).
        old_logprobs: list[list[torch.Tensor] | None] = [None]
        with torch.no_grad():
            old_logprobs += [[self._score(self.model.module, batch) for batch in step] for step in batches[1:]]

        grad_norms, parts = [], []
        for step_index, (shard, micro_batches) in enumerate(zip(shards, batches)):
            # Used within this iteration only, so it sees this step's shard and index.
            def loss_fn(index: int, batch: TrainBatch, logprobs: torch.Tensor) -> tuple[torch.Tensor, dict]:
                scored = old_logprobs[step_index]
                old = scored[index] if scored is not None else logprobs.detach()
                ref = None
                if self.ref_model is not None:
                    with torch.no_grad():
                        ref = self._score(self.ref_model, batch)
                return rl_loss(
                    logprobs,
                    old,
                    batch.advantages,
                    batch.loss_mask,
                    loss_config,
                    denominator=shard.denominator,
                    engine_logprobs=batch.engine_logprobs,
                    ref_logprobs=ref,
                    sample_weights=batch.sample_weights,
                )

            grad_norm, step_parts = self._optimizer_step(micro_batches, loss_fn, self.config.lr)
            grad_norms.append(grad_norm)
            parts.extend(step_parts)
        return self._summary(grad_norms, parts)

    def sft_update(self, shard: StepShard) -> dict[str, float]:
        """One optimizer step of cross-entropy on the policy tokens (expert warm start)."""

        def loss_fn(index: int, batch: TrainBatch, logprobs: torch.Tensor) -> tuple[torch.Tensor, dict]:
            return sft_loss(logprobs, batch.loss_mask, shard.denominator)

        grad_norm, parts = self._optimizer_step(self._micro_batches(shard), loss_fn, self.config.sft_lr)
        return self._summary([grad_norm], parts)

    def _summary(self, grad_norms: list[float], parts: list[dict[str, float]]) -> dict[str, float]:
        summary = combine_metrics(parts)
        summary["grad_norm"] = sum(grad_norms) / len(grad_norms)
        summary["nonfinite_grad_steps"] = float(sum(not math.isfinite(norm) for norm in grad_norms))
        summary["step"] = float(self.step)
        return summary

    def state_dict(self) -> dict[str, torch.Tensor]:
        return policy_state_dict(self.model.module)

    def lora_adapter(self) -> LoraAdapter:
        """The adapters alone, as the engines load them (learner.lora only)."""
        return lora_adapter(self.model.module)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters the optimizer updates (LoRA: the adapters only)."""
        return {name: p.detach().cpu() for name, p in self.model.module.named_parameters() if p.requires_grad}

    def policy_logprobs(self, trajectories: list[Trajectory]) -> list[list[float]]:
        """This rank's logprob of every policy token (loss mask 1), in order: what the engine's logprobs
        should equal when both hold the same weights."""
        out = []
        with torch.no_grad():
            for trajectory in trajectories:
                batch = collate([trajectory]).to(self.device)
                logprobs = self._score(self.model.module, batch)[0].float().cpu()
                out.append([float(v) for v, m in zip(logprobs, trajectory.loss_mask) if m])
        return out

    def init_weight_sender(
        self, engines: list[Any], tensor_parallel_size: int, master_port: int, timeout_s: float
    ) -> None:
        """Rank 0 only: join an NCCL group with every engine worker (vLLM's weight-transfer API)."""
        from learner.weight_sync import NcclWeightSender

        self.weight_sender = NcclWeightSender(
            self.model.module, engines, tensor_parallel_size, self.node_ip(), master_port, timeout_s
        )

    def send_weights(self, policy_version: int) -> None:
        self.weight_sender.send(policy_version)

    def rng_state(self) -> dict[str, Any]:
        return capture_rng_state()

    def save_checkpoint(
        self, run_dir: str, policy_version: int, data_position: dict[str, Any], rng_states: list[dict[str, Any]]
    ) -> str:
        state = CheckpointState(self.step, policy_version, data_position, self.world_size)
        path = save_checkpoint(run_dir, state, self.model.module, self.optimizer, rng_states, self.model_path)
        return str(path)

    def load_checkpoint(self, path: str) -> CheckpointState:
        state = load_checkpoint(path, self.model.module, self.optimizer, self.rank)
        self.step = state.step
        return state


class LearnerGroup:
    """`num_ranks` LearnerWorker actors training one policy. `use_gpu=None` takes GPUs when the cluster has
    one per rank. `placement_group` (from cluster/) pins rank r to bundle r. Checkpoints are written by rank 0:
    run_dir must be on a filesystem rank 0 can write and every rank can read."""

    def __init__(
        self,
        num_ranks: int,
        model_path: str | Path,
        config: LearnerConfig = LearnerConfig(),
        *,
        use_gpu: bool | None = None,
        placement_group: PlacementGroup | None = None,
    ) -> None:
        if num_ranks < 1:
            raise ValueError(f"num_ranks must be >= 1, got {num_ranks}")
        if not Path(model_path).is_dir():
            raise FileNotFoundError(f"model directory {model_path} does not exist")
        self.num_ranks = num_ranks
        self.config = config
        self.step = 0
        self._nccl_ready = False  # the NCCL weight-sync group (GPU path) is formed on the first sync
        self.vocab_size = AutoConfig.from_pretrained(model_path).vocab_size
        if use_gpu is None:
            use_gpu = ray.cluster_resources().get("GPU", 0) >= num_ranks
        worker_class = ray.remote(LearnerWorker)
        self.workers = []
        for rank in range(num_ranks):
            options: dict[str, Any] = {"num_cpus": config.num_cpus, "num_gpus": 1 if use_gpu else 0}
            if placement_group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group, placement_group_bundle_index=rank
                )
            self.workers.append(
                worker_class.options(**options).remote(rank, num_ranks, str(model_path), config)
            )
        try:
            timeout = config.setup_timeout_s
            node_ips = self._wait([worker.node_ip.remote() for worker in self.workers], timeout, "start")
            port = self._wait(self.workers[0].free_port.remote(), timeout, "start")
            address = "127.0.0.1" if len(set(node_ips)) == 1 else node_ips[0]
            self._wait([worker.setup.remote(address, port) for worker in self.workers], timeout, "setup")
        except BaseException:
            self.shutdown()
            raise

    @staticmethod
    def _wait(refs: Any, timeout: float, what: str) -> Any:
        """ray.get with a deadline that fails as soon as any rank fails: the other ranks would otherwise sit
        in an all-reduce waiting for the dead one until the collective timeout."""
        pending = list(refs) if isinstance(refs, list) else [refs]
        deadline = time.monotonic() + timeout
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(
                    f"learner group: {what} did not finish within {timeout:.0f} s; the group is unusable, "
                    "shut it down and start a new one"
                )
            ray.get(ready)  # raises this rank's error now
        return ray.get(refs)

    def _check(self, trajectories: list[Trajectory]) -> None:
        if not trajectories:
            raise ValueError("the learner needs at least one trajectory")
        for trajectory in trajectories:
            check_trajectory(trajectory, self.vocab_size)

    def _split_step(
        self,
        trajectories: list[Trajectory],
        indices: list[int],
        advantages: list[float],
        weights: list[float],
        denominator: float,
    ) -> list[StepShard]:
        """One optimizer step's trajectories over the ranks. A rank left with none gets a copy of one with its
        loss mask zeroed: every rank must run a backward for DDP's all-reduce, and this one adds nothing."""
        shards = []
        for part in split_evenly(indices, self.num_ranks):
            if part:
                shards.append(
                    StepShard(
                        [trajectories[i] for i in part],
                        [advantages[i] for i in part],
                        [weights[i] for i in part],
                        denominator,
                    )
                )
            else:
                filler = trajectories[indices[0]]
                empty = dataclasses.replace(filler, loss_mask=[0] * len(filler.token_ids))
                shards.append(StepShard([empty], [0.0], [0.0], denominator))
        return shards

    def update(self, trajectories: list[Trajectory], sample_weights: list[float] | None = None) -> dict[str, float]:
        """One GRPO/MINIRL update on a batch of finished episodes (whole groups). `sample_weights` scale each
        episode's policy loss as given (no renormalisation: mean 1 keeps the loss scale)."""
        start = time.perf_counter()
        self._check(trajectories)
        weights = [1.0] * len(trajectories) if sample_weights is None else [float(w) for w in sample_weights]
        if len(weights) != len(trajectories):
            raise ValueError(f"{len(trajectories)} trajectories but {len(weights)} sample weights")
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError("sample weights must be finite and >= 0")

        rewards, group_ids = [t.total_reward for t in trajectories], [t.group_id for t in trajectories]
        result = group_advantages(rewards, group_ids, self.config.advantage)
        advantages = result.advantages.tolist()
        kept = [index for index, keep in enumerate(result.keep) if keep]
        metrics = {
            "num_trajectories": float(len(trajectories)),
            "num_trajectories_used": float(len(kept)),
            "num_groups": float(result.num_groups),
            "num_groups_dropped": float(result.num_dropped_groups),
            "flat_group_fraction": flat_group_fraction(rewards, group_ids, self.config.advantage.min_spread),
            "mean_reward": sum(t.total_reward for t in trajectories) / len(trajectories),
            "advantage_abs_mean": sum(abs(advantages[i]) for i in kept) / len(kept) if kept else 0.0,
        }
        if not kept:  # every group was flat: nothing to learn, the policy stays as it is
            metrics.update(optimizer_steps=0.0, step=float(self.step), update_time_s=time.perf_counter() - start)
            return metrics

        steps = split_evenly(kept, min(self.config.mini_batches, len(kept)))
        shards_per_rank: list[list[StepShard]] = [[] for _ in range(self.num_ranks)]
        for step_indices in steps:
            token_counts = [trajectories[i].num_policy_tokens for i in step_indices]
            denominator = loss_denominator(token_counts, self.config.policy_loss.aggregation)
            for rank, shard in enumerate(
                self._split_step(trajectories, step_indices, advantages, weights, denominator)
            ):
                shards_per_rank[rank].append(shard)
        refs = [worker.update.remote(shards) for worker, shards in zip(self.workers, shards_per_rank)]
        results = self._wait(refs, self.config.call_timeout_s, "update")

        metrics.update(self._merge(results, len(steps)))
        metrics["update_time_s"] = time.perf_counter() - start
        return metrics

    def sft_update(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """One supervised step: cross-entropy on the loss_mask tokens of the given (expert) episodes."""
        start = time.perf_counter()
        self._check(trajectories)
        n = len(trajectories)
        tokens = loss_denominator([t.num_policy_tokens for t in trajectories], "token-mean")
        shards = self._split_step(trajectories, list(range(n)), [0.0] * n, [1.0] * n, tokens)
        refs = [worker.sft_update.remote(shard) for worker, shard in zip(self.workers, shards)]
        metrics = self._merge(self._wait(refs, self.config.call_timeout_s, "sft_update"), 1)
        metrics["num_trajectories"] = float(len(trajectories))
        metrics["update_time_s"] = time.perf_counter() - start
        return metrics

    def _merge(self, rank_results: list[dict[str, float]], num_steps: int) -> dict[str, float]:
        """Rank results -> one dict: loss terms are per optimizer step, grad norm and step from rank 0."""
        merged = combine_metrics(rank_results)
        for key in ("loss", "pg_loss", "kl_loss"):
            if key in merged:
                merged[key] /= num_steps
        for key in ("grad_norm", "nonfinite_grad_steps", "step"):
            merged[key] = rank_results[0][key]
        merged["optimizer_steps"] = float(num_steps)
        self.step = int(merged["step"])
        return merged

    def reset_optimizer(self) -> None:
        """Fresh optimizer state on every rank (LearnerWorker.reset_optimizer): the start of GRPO after SFT."""
        self._wait([worker.reset_optimizer.remote() for worker in self.workers], self.config.call_timeout_s, "reset")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights (CPU tensors) from rank 0, for weight sync and publishing."""
        return self._wait(self.workers[0].state_dict.remote(), self.config.call_timeout_s, "state_dict")

    def policy_logprobs(self, trajectories: list[Trajectory]) -> list[list[float]]:
        """Rank 0's logprobs of each trajectory's policy tokens under the current weights."""
        self._check(trajectories)
        return self._wait(self.workers[0].policy_logprobs.remote(trajectories), self.config.call_timeout_s, "score")

    def sync_weights(self, engines: list[Any], policy_version: int, engine_config: EngineConfig) -> float:
        """Push the current policy into every engine as `policy_version`; returns the seconds it took, from
        reading the weights on rank 0 to every engine serving them. With learner.lora and
        engine.lora_sync=adapter only the adapters travel, through the object store (the engines were started
        with lora_rank); otherwise the full (LoRA: merged) weights, by engine_config.weight_transfer
        (learner.weight_sync); the NCCL group is formed on the first call and reused."""
        start = time.perf_counter()
        timeout = engine_config.weight_sync_timeout_s
        if self.config.lora is not None and engine_config.lora_sync == "adapter":
            adapter = self._wait(self.workers[0].lora_adapter.remote(), timeout, "lora_adapter")
            sync_adapter_through_object_store(adapter, engines, policy_version, timeout)
            return time.perf_counter() - start
        if engine_config.weight_transfer == "object_store":
            sync_through_object_store(self.state_dict(), engines, policy_version, timeout)
            return time.perf_counter() - start
        if self.config.lora is not None:
            raise ValueError(
                "learner.lora with engine.lora_sync=merged syncs through engine.weight_transfer=object_store only"
            )
        sender = self.workers[0]
        if not self._nccl_ready:
            port = self._wait(sender.free_port.remote(), timeout, "free_port")
            init = sender.init_weight_sender.remote(engines, engine_config.tensor_parallel_size, port, timeout)
            self._wait(init, timeout, "NCCL weight-sync setup")
            self._nccl_ready = True
        self._wait(sender.send_weights.remote(policy_version), timeout, "NCCL weight sync")
        return time.perf_counter() - start

    def save_checkpoint(
        self, run_dir: str | Path, policy_version: int, data_position: dict[str, Any] | None = None
    ) -> Path:
        timeout = self.config.call_timeout_s
        rng_states = self._wait([worker.rng_state.remote() for worker in self.workers], timeout, "rng_state")
        ref = self.workers[0].save_checkpoint.remote(str(run_dir), policy_version, data_position or {}, rng_states)
        return Path(self._wait(ref, timeout, "save_checkpoint"))

    def load_checkpoint(self, path: str | Path) -> CheckpointState:
        refs = [worker.load_checkpoint.remote(str(path)) for worker in self.workers]
        states = self._wait(refs, self.config.call_timeout_s, "load_checkpoint")
        self.step = states[0].step
        return states[0]

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
