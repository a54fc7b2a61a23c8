"""The learner group on a real local Ray (gloo on CPU), plus the pieces it is built from: batching, the
scoring function and checkpoint directories. Trajectories are built by hand: random ids, masks, logprobs."""

import dataclasses
import random
import time

import numpy as np
import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from learner.advantages import AdvantageConfig
from learner.batch import collate, shared_prefix_length, split_evenly, token_logprobs
from learner.checkpoint import capture_rng_state, load_checkpoint, save_checkpoint
from learner.group import LearnerConfig, LearnerGroup
from learner.losses import PolicyLossConfig
from rollout.data.trajectory import Trajectory
from rollout.models.checkpoints import CheckpointState, latest_checkpoint

VOCAB = 300


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    path = tmp_path_factory.mktemp("tiny_model")
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def make_trajectory(
    rng: np.random.Generator, index: int, group: str, reward: float, length: int, prompt: list[int] | None = None
) -> Trajectory:
    prompt = rng.integers(0, VOCAB, 3).tolist() if prompt is None else prompt
    prompt_length = len(prompt)
    mask = [0] * prompt_length + [int(bit) for bit in rng.random(length - prompt_length) < 0.7]
    mask[-1] = 1  # at least one policy token
    return Trajectory(
        episode_id=f"episode-{index}",
        run_id="test",
        step=0,
        group_id=group,
        harness="test",
        seed=0,
        policy_version=0,
        token_ids=prompt + rng.integers(0, VOCAB, length - prompt_length).tolist(),
        loss_mask=mask,
        logprobs=[float(rng.uniform(-7.0, -4.0)) if bit else 0.0 for bit in mask],
        prompt_length=prompt_length,
        turn_rewards=[reward],
        total_reward=reward,
        status="completed",
        num_turns=1,
    )


def make_batch(seed: int, rewards_per_group: list[list[float]]) -> list[Trajectory]:
    """Groups of episodes with lengths 6..24, so ranks get unequal token counts; a group's episodes share
    their prompt, as GRPO's do (the learner then runs it once per micro-batch)."""
    rng = np.random.default_rng(seed)
    trajectories = []
    for group_index, rewards in enumerate(rewards_per_group):
        prompt = rng.integers(0, VOCAB, 4).tolist()
        for reward in rewards:
            length = int(rng.integers(6, 25))
            trajectories.append(make_trajectory(rng, len(trajectories), f"g{group_index}", reward, length, prompt))
    return trajectories


# Adam's first step is lr * g / (|g| + eps): with the usual eps=1e-8 it is lr * sign(g), blind to the scale of
# the gradient. eps=1 and no clipping keep the update proportional to the gradient, so a loss normalised per
# rank instead of globally would show up in the parameters.
SCALE_SENSITIVE = dict(lr=1e-2, adam_eps=1.0, grad_clip=None, weight_decay=0.0)


# ---------------------------------------------------------------- batch and scoring (no Ray)


def test_collate_pads_right_and_checks_input():
    rng = np.random.default_rng(0)
    short, long = make_trajectory(rng, 0, "g", 1.0, 6), make_trajectory(rng, 1, "g", 0.0, 9)
    batch = collate([short, long], advantages=[0.5, -0.5])
    assert batch.input_ids.shape == (2, 9)
    assert batch.attention_mask[0].tolist() == [1] * 6 + [0] * 3
    assert batch.loss_mask[0, :6].tolist() == [float(bit) for bit in short.loss_mask]
    assert batch.loss_mask[0, 6:].sum() == 0
    torch.testing.assert_close(batch.engine_logprobs[1], torch.tensor(long.logprobs))
    assert batch.sample_weights.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="loss_mask\\[0\\]"):
        collate([dataclasses.replace(short, loss_mask=[1] + short.loss_mask[1:])])
    with pytest.raises(ValueError, match="advantages"):
        collate([short, long], advantages=[1.0])
    assert [len(part) for part in split_evenly(list(range(7)), 3)] == [3, 2, 2]
    assert split_evenly([1], 2) == [[1], []]


def test_token_logprobs_match_log_softmax_and_ignore_padding(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.randint(0, VOCAB, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        scored = token_logprobs(model, ids, mask)
        alone = token_logprobs(model, ids[1:, :5], mask[1:, :5])
        logits = model(input_ids=ids[:1]).logits[0]
    expected = torch.log_softmax(logits[:-1], dim=-1)[torch.arange(7), ids[0, 1:]]
    torch.testing.assert_close(scored[0, 1:], expected)
    assert scored[:, 0].tolist() == [0.0, 0.0]
    assert scored[1, 5:].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(scored[1:, :5], alone, atol=1e-5, rtol=1e-5)


def test_token_logprobs_with_a_loss_mask_score_only_policy_tokens_and_equal_the_full_pass(model_dir):
    """The LM head runs only where some row predicts a policy token: those logprobs (and their gradients) are
    the full pass's, every other position is 0."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.randint(0, VOCAB, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 7:] = 0
    loss_mask = torch.zeros(2, 9)
    loss_mask[0, 3:5] = 1
    loss_mask[1, 6] = 1
    full = token_logprobs(model, ids, mask)
    (full * loss_mask).sum().backward()
    full_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    kept = token_logprobs(model, ids, mask, loss_mask)
    (kept * loss_mask).sum().backward()
    torch.testing.assert_close(kept * loss_mask, full * loss_mask, atol=1e-6, rtol=1e-6)
    assert (kept[:, [0, 1, 2, 5, 7, 8]] == 0).all() and kept[0, 6] != 0  # position 6 is row 1's policy token
    for parameter, expected in zip(model.parameters(), full_grads):
        torch.testing.assert_close(parameter.grad, expected, atol=1e-6, rtol=1e-5)
    empty = token_logprobs(model, ids, mask, torch.zeros(2, 9))  # no policy token: zeros, still a graph
    assert (empty == 0).all() and empty.requires_grad


def test_rows_sharing_a_prompt_score_and_backpropagate_as_each_row_alone(model_dir):
    """A group's episodes share their prompt, which then runs once for the whole micro-batch: each row's
    logprobs and the summed gradient equal those of every row scored alone (no shared pass)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = torch.randint(0, VOCAB, (6,))
    lengths = [11, 9, 12]
    ids = torch.cat([prompt.expand(3, 6), torch.randint(0, VOCAB, (3, 6))], dim=1)
    mask = torch.zeros(3, 12, dtype=torch.long)
    loss_mask = torch.zeros(3, 12)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        loss_mask[row, 6:length] = 1
    loss_mask[1, 7] = 0  # a gap: an observation token inside the reply
    assert shared_prefix_length(ids, mask, limit=5) == 5 and shared_prefix_length(ids[:1], mask[:1], 5) == 0
    weights = torch.randn(3, 12)
    together = token_logprobs(model, ids, mask, loss_mask)
    (together * loss_mask * weights).sum().backward()
    together_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for row, length in enumerate(lengths):
        row_mask = loss_mask[row : row + 1, :length]
        alone = token_logprobs(model, ids[row : row + 1, :length], mask[row : row + 1, :length], row_mask)
        (alone * row_mask * weights[row, :length]).sum().backward()
        torch.testing.assert_close(together[row : row + 1, :length] * row_mask, alone * row_mask, atol=1e-5, rtol=1e-5)
    for parameter, expected in zip(model.parameters(), together_grads):
        torch.testing.assert_close(parameter.grad, expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- checkpoint directories (no Ray)


def test_checkpoint_roundtrip_and_atomic_write(model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.randint(0, VOCAB, (1, 5)), labels=torch.randint(0, VOCAB, (1, 5))).loss.backward()
    optimizer.step()
    random.seed(7)
    saved_rng = capture_rng_state()  # tensors and plain tuples: rng.pt loads with weights_only=True
    state = CheckpointState(step=3, policy_version=2, data_position={"next_seed": 11})
    path = save_checkpoint(tmp_path, state, model, optimizer, [saved_rng], tokenizer_source=model_dir)
    assert latest_checkpoint(tmp_path) == path

    # A writer killed midway leaves only a hidden temporary directory, which is never taken for a checkpoint.
    half_written = path.parent / ".tmp-version_00000009-deadbeef"
    (half_written / "model").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) == path

    fresh = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    random.seed(99)
    loaded = load_checkpoint(path, fresh, fresh_optimizer)
    assert loaded == state
    assert random.getstate() == saved_rng["python"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)
    first = next(iter(optimizer.state.values()))
    fresh_first = next(iter(fresh_optimizer.state.values()))
    torch.testing.assert_close(fresh_first["exp_avg_sq"], first["exp_avg_sq"], rtol=0, atol=0)

    later = save_checkpoint(tmp_path, dataclasses.replace(state, step=4), model, optimizer, [saved_rng])
    assert latest_checkpoint(tmp_path) == later
    assert not half_written.exists()  # the next save cleans up after the killed writer
    assert latest_checkpoint(tmp_path / "nothing-here") is None


# ---------------------------------------------------------------- the group on Ray


def _parameters_after_update(model_dir, num_ranks, config, batch):
    group = LearnerGroup(num_ranks, model_dir, config, use_gpu=False)
    try:
        metrics = group.update(batch)
        return group.state_dict(), metrics
    finally:
        group.shutdown()


def test_two_ranks_make_the_same_update_as_one(ray_session, model_dir):
    # 7 episodes, 2 optimizer steps (4 + 3 episodes), so the second step sees ratios != 1 (clipping, TIS),
    # and with 2 ranks the shares are 2+2 and 2+1 episodes of unequal lengths, in different micro-batches;
    # episodes of a group share their prompt, run once per micro-batch (rows 0-2 on one rank, pairs on two).
    batch = make_batch(seed=1, rewards_per_group=[[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 1.0]])
    loss = PolicyLossConfig(loss_type="grpo", clip_high=0.28, dual_clip=3.0, kl_coef=0.05, tis_cap=2.0)
    base = LearnerConfig(**SCALE_SENSITIVE, mini_batches=2, policy_loss=loss)
    two_ranks, metrics_2 = _parameters_after_update(
        model_dir, 2, base.model_copy(update={"micro_batch_size": 2}), batch
    )
    one_rank, metrics_1 = _parameters_after_update(
        model_dir, 1, base.model_copy(update={"micro_batch_size": 3}), batch
    )

    initial = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    moved = max((one_rank[name] - initial[name]).abs().max().item() for name in initial)
    assert moved > 1e-3  # the update did something
    for name in one_rank:
        torch.testing.assert_close(two_ranks[name], one_rank[name], rtol=1e-5, atol=1e-6)
    assert metrics_2["grad_norm"] == pytest.approx(metrics_1["grad_norm"], rel=1e-4)
    assert metrics_2["loss"] == pytest.approx(metrics_1["loss"], rel=1e-4, abs=1e-6)
    assert metrics_1["optimizer_steps"] == metrics_2["optimizer_steps"] == 2
    assert metrics_1["policy_tokens"] == sum(t.num_policy_tokens for t in batch)
    assert metrics_1["step"] == 2


def test_checkpoint_kill_and_resume_continue_identically(ray_session, model_dir, tmp_path):
    first_batch = make_batch(seed=2, rewards_per_group=[[1.0, 0.0, 0.0], [0.2, 0.9, 0.4]])
    second_batch = make_batch(seed=3, rewards_per_group=[[0.0, 1.0, 1.0], [0.5, 0.1, 0.3]])
    config = LearnerConfig(**SCALE_SENSITIVE, micro_batch_size=2)

    group = LearnerGroup(2, model_dir, config, use_gpu=False)
    try:
        group.update(first_batch)
        path = group.save_checkpoint(tmp_path, policy_version=1, data_position={"next_seed": 42})
        saved_weights = group.state_dict()
        saved_rng = ray.get([worker.rng_state.remote() for worker in group.workers])
        group.update(second_batch)  # the reference continuation
        continued = group.state_dict()
    finally:
        group.shutdown()  # ray.kill: the workers die without any goodbye

    assert latest_checkpoint(tmp_path) == path
    # Another seed, so a restored RNG cannot be mistaken for a freshly seeded one.
    resumed = LearnerGroup(2, model_dir, config.model_copy(update={"seed": 1234}), use_gpu=False)
    try:
        state = resumed.load_checkpoint(path)
        assert (state.step, state.policy_version, state.data_position) == (1, 1, {"next_seed": 42})
        assert resumed.step == 1
        for name, tensor in resumed.state_dict().items():
            torch.testing.assert_close(tensor, saved_weights[name], rtol=0, atol=0)
        restored_rng = ray.get([worker.rng_state.remote() for worker in resumed.workers])
        for saved, restored in zip(saved_rng, restored_rng):
            assert restored["python"] == saved["python"]
            assert torch.equal(restored["torch"], saved["torch"])
            np.testing.assert_array_equal(restored["numpy"][1], saved["numpy"][1])
        assert not torch.equal(restored_rng[0]["torch"], restored_rng[1]["torch"])  # one state per rank
        # Same weights but fresh Adam moments would give a different second step: this checks the optimizer.
        metrics = resumed.update(second_batch)
        assert metrics["step"] == 2
        for name, tensor in resumed.state_dict().items():
            torch.testing.assert_close(tensor, continued[name], rtol=1e-6, atol=1e-7)
    finally:
        resumed.shutdown()


def wait_until_dead(actor, timeout_s: float = 60.0) -> None:
    """Returns once calls on the killed `actor` fail; fails the test if it still answers after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=max(0.1, deadline - time.monotonic()))
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            break
        time.sleep(0.2)
    pytest.fail(f"the killed actor has not died after {timeout_s} s")


def test_sft_flat_groups_and_a_dead_rank(ray_session, model_dir):
    expert = make_batch(seed=4, rewards_per_group=[[1.0]])  # one episode on two ranks: rank 1 idles
    config = LearnerConfig(
        sft_lr=1e-2, advantage=AdvantageConfig(drop_low_spread=True), call_timeout_s=120, collective_timeout_s=60
    )
    group = LearnerGroup(2, model_dir, config, use_gpu=False)
    try:
        losses = [group.sft_update(expert)["loss"] for _ in range(8)]
        assert losses[-1] < 0.7 * losses[0]

        before = group.state_dict()
        flat = make_batch(seed=5, rewards_per_group=[[1.0, 1.0], [0.0, 0.0]])
        metrics = group.update(flat)
        assert metrics["num_groups_dropped"] == 2 and metrics["optimizer_steps"] == 0
        for name, tensor in group.state_dict().items():
            assert torch.equal(tensor, before[name])
        pair = make_batch(seed=6, rewards_per_group=[[1.0, 0.0]])
        with pytest.raises(ValueError, match="sample weights"):
            group.update(pair, sample_weights=[1.0])
        # Refused on the driver, before any rank starts: the group stays usable.
        out_of_vocabulary = dataclasses.replace(pair[0], token_ids=[VOCAB] + pair[0].token_ids[1:])
        with pytest.raises(ValueError, match="token ids"):
            group.update([out_of_vocabulary, pair[1]])
        assert group.update(pair, sample_weights=[0.5, 2.0])["optimizer_steps"] == 1

        # Rank 0 would wait in the all-reduce for the dead rank: the call must fail at once with the dead
        # rank's error, not hang until a timeout (which would raise TimeoutError instead).
        ray.kill(group.workers[1])
        wait_until_dead(group.workers[1])  # ray.kill does not wait: an update sent at once may still finish
        with pytest.raises(ray.exceptions.RayActorError):
            group.update(make_batch(seed=7, rewards_per_group=[[1.0, 0.0]]))
    finally:
        group.shutdown()
