"""Leave-one-generator-out: persona policies judged on a behaviour generator they were not fitted on.

For each generator G of rollout.harnesses.persona.generators: the evidence policy's parameters are fitted
(a small grid, bench-side) on the OTHER generators' "fit" personas only, then every policy plays G's "judge"
personas (seed namespaces never used for fitting) as a simulated RustyWorm client (rollout.harnesses.persona.
client): up to --max-observations observations, converged at convergence >= 0.90 to the hidden target.

Rows: RustyWorm's own heuristic (refine_profile), the persona expert as /predict-delta serves it (through the
similarity guard, rollout.harnesses.persona.similarity_guard) and without the guard, the RLlib PPO checkpoint
(given --rllib; skipped otherwise; guarded), the persona LLM as policy llm serves it (guarded; given --persona-llm: a
model directory or checkpoint on a vLLM engine, replies under the apply_delta grammar, and with --free-text also
without it; on the first --persona-llm-personas judge personas, the share of valid apply_delta replies printed
under the table), the evidence policy fitted without G, and the served default (DEFAULT_PARAMS, shipped in code). Columns: converged@0.90 with a 95% Wilson interval, mean observations to
converge (over converged personas) and mean final convergence to the target with 95% normal intervals, the
share of personas that end worse than they started, and RustyWorm's observed-signature compute_convergence at
the end.

    PYTHONPATH=$PWD python bench/persona_generalization.py [--personas 200] [--fit-personas 30] [--rllib CKPT]
        [--generators NAME ...] [--llm-model DIR [--llm-cache runs/persona-llm-texts.parquet]]
        [--persona-llm DIR [--persona-llm-personas 20] [--free-text]] [--similarity KIND]

--similarity replaces every generator's similarity_to_target with what another kind of client might send
(texts unchanged): constant (0.5), zero (RustyWorm's default 0.0), noisy (the convergence to the target plus
Gaussian noise, sd 0.02), coarse (the convergence rounded to 2 decimals), observed (RustyWorm's observed-signature
compute_convergence over the responses so far, which never sees the target), union (1 - |d| / 2 averaged over
the axes of both profiles, so an axis the target lacks counts as a target of 0), cosine ((1 + the cosine of
the two value vectors) / 2, not a sum of per-axis terms).

--llm-model adds the sixth generator, a real model writing the target's answers from its traits
(rollout.harnesses.persona.llm_generator), judged only (fitting stays on the five template generators); its
texts are written once through a vLLM engine and cached in --llm-cache.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import math
import random
import statistics
import time
import weakref
from dataclasses import dataclass

from rollout.harnesses.persona.client import (
    CheckpointClientPolicy, DeltaPolicy, EpisodeResult, EvidenceClientPolicy, ExpertClientPolicy,
    GuardedClientPolicy, HeuristicClientPolicy, LLMClientPolicy, play_episode,
)
from rollout.harnesses.persona.analysis import CONVERGED_AT, convergence, observed_convergence
from rollout.harnesses.persona.evidence_policy import DEFAULT_PARAMS, PolicyParams
from rollout.harnesses.persona.generators import GENERATORS, Generator, family_persona
from rollout.harnesses.persona.llm_generator import LLMGenerator
from rollout.harnesses.persona.models import AiProfile, BehaviorObservation

# The persona LLM's context: the tiny model's whole one (configs/persona.yaml); a longer prompt falls back, as in
# the service (whose configs/serve.yaml default is 2048).
PERSONA_LLM_CONTEXT = 4096
SIMILARITIES = ("own", "constant", "zero", "noisy", "coarse", "observed", "union", "cosine")


def _union_values(current: AiProfile, target: AiProfile) -> tuple[list[float], list[float]]:
    """Both profiles' values over the union of their axes, a missing axis as 0."""
    names = sorted({a.name for a in current.personality} | {a.name for a in target.personality})
    return ([current.personality_value(n) or 0.0 for n in names], [target.personality_value(n) or 0.0 for n in names])


def union_similarity(current: AiProfile, target: AiProfile) -> float:
    """Mean over the union of both profiles' axes of 1 - |d| / 2: an axis the target lacks counts, as 0."""
    mine, theirs = _union_values(current, target)
    return 1.0 - sum(abs(a - b) for a, b in zip(mine, theirs)) / (2 * len(mine))


def cosine_similarity(current: AiProfile, target: AiProfile) -> float:
    """(1 + cosine of the two value vectors over the union of axes) / 2: not a sum of per-axis terms."""
    mine, theirs = _union_values(current, target)
    norms = math.hypot(*mine) * math.hypot(*theirs)
    return 0.5 if norms == 0 else (1.0 + sum(a * b for a, b in zip(mine, theirs)) / norms) / 2


class OtherSimilarity:
    """A generator's texts with the similarity another kind of client would send (see --similarity)."""

    def __init__(self, generator: Generator, kind: str) -> None:
        self.generator, self.kind, self.name = generator, kind, generator.name
        self.responses: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # episode rng -> responses so far

    def observe(self, target: AiProfile, current: AiProfile, rng: random.Random) -> BehaviorObservation:
        observation = self.generator.observe(target, current, rng)
        true = convergence(current, target)
        if self.kind == "observed":
            seen = self.responses.setdefault(rng, [])
            seen.append(observation.response)
        similarity = {
            "constant": lambda: 0.5, "zero": lambda: 0.0, "coarse": lambda: round(true, 2),
            "noisy": lambda: min(1.0, max(0.0, true + rng.gauss(0.0, 0.02))),
            "observed": lambda: observed_convergence(current, self.responses[rng]),
            "union": lambda: union_similarity(current, target), "cosine": lambda: cosine_similarity(current, target),
        }[self.kind]()
        return observation.model_copy(update={"similarity_to_target": round(similarity, 6)})

# The fitting grid (bench-side: the policy ships DEFAULT_PARAMS, the fit over all generators).
GRID = {"cue_scale": (2.0, 4.0), "max_move": (0.5, 2.0), "max_axes": (1, 2)}


def play_all(policy: DeltaPolicy, generator: str, purpose: str, count: int, max_observations: int) -> list[EpisodeResult]:
    return [
        play_episode(policy, family_persona(purpose, generator, i), GENERATORS[generator],
                     random.Random(f"{purpose}-episode-{generator}-{i}"), max_observations)
        for i in range(count)
    ]


def fit(generators: list[str], count: int, max_observations: int) -> PolicyParams:
    """The grid point with the best mean final convergence (converged rate as tie-break) on `generators`."""
    best, best_score = DEFAULT_PARAMS, (-1.0, -1.0)
    for values in itertools.product(*GRID.values()):
        params = PolicyParams(**dict(zip(GRID, values)))
        results = [r for g in generators for r in play_all(EvidenceClientPolicy(params), g, "fit", count, max_observations)]
        score = (statistics.mean(r.final_convergence for r in results), statistics.mean(r.converged for r in results))
        if score > best_score:
            best, best_score = params, score
    return best


@dataclass
class LLMPlay:
    """The persona LLM on one fold: its episodes and how its replies went."""

    results: list[EpisodeResult]
    replies: int  # prompts the engine answered
    invalid: int  # replies that were not a usable apply_delta call (fell back to the expert)
    too_long: int  # prompts that did not fit the context (fell back too)


def play_llm(make_policy, generator: str, count: int, max_observations: int) -> LLMPlay:
    """The persona LLM on `count` judge personas, all at once (the engine batches them), each through its own
    similarity guard as the service answers it."""
    policies = [make_policy() for _ in range(count)]
    guarded = [GuardedClientPolicy(policy) for policy in policies]
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(
            lambda i: play_episode(guarded[i], family_persona("judge", generator, i), GENERATORS[generator],
                                   random.Random(f"judge-episode-{generator}-{i}"), max_observations), range(count)))
    return LLMPlay(results, sum(p.replies for p in policies), sum(p.invalid for p in policies),
                   sum(p.too_long for p in policies))


def persona_llm(path: str):
    """(constrained, free-text) factories of LLMClientPolicy on one vLLM engine actor loaded with `path`: a
    model directory, a learner checkpoint or a run directory (its newest checkpoint), full weights."""
    from transformers import AutoTokenizer

    from rollout.chat import ChatRenderer
    from rollout.engine import EngineConfig, SamplingConfig, start_engines
    from rollout.harnesses.persona.policy_format import PersonaPolicyFormat
    from rollout.models.checkpoints import resolve_model_dir

    model_dir = str(resolve_model_dir(path))
    (engine,) = start_engines(model_dir, EngineConfig(dtype="float32", max_model_len=PERSONA_LLM_CONTEXT))
    policy_format = PersonaPolicyFormat(ChatRenderer(AutoTokenizer.from_pretrained(model_dir)))
    sampling = SamplingConfig(temperature=0.0, max_tokens=256)  # configs/serve.yaml's
    return (lambda: LLMClientPolicy(engine, policy_format, sampling, PERSONA_LLM_CONTEXT, constrain=True),
            lambda: LLMClientPolicy(engine, policy_format, sampling, PERSONA_LLM_CONTEXT, constrain=False))


def llm_generator(args: argparse.Namespace) -> LLMGenerator:
    """The LLM generator with every judge persona's texts cached (written now on a local engine if missing)."""
    generator = LLMGenerator(args.llm_model, args.llm_cache)
    personas = [family_persona("judge", "llm", i) for i in range(args.personas)]
    if any((p.target.id, i) not in generator.texts for p in personas for i in range(args.llm_texts)):
        start = time.perf_counter()
        written = generator.prefill(personas, args.llm_texts)
        print(f"LLM generator: wrote {written} texts to {args.llm_cache} in {time.perf_counter() - start:.0f} s")
    return generator


def own_axes_ceiling(generator: str, count: int) -> float:
    """The share of `count` judge personas that would converge if every axis the starting profile has were set
    exactly on its target: the target axes the start lacks stay at 0 (a policy finds them only when a text names
    them), so this bounds any policy that moves only the profile's own axes."""
    reached = 0
    for i in range(count):
        persona = family_persona("judge", generator, i)
        own = {axis.name for axis in persona.start.personality}
        kept = [axis for axis in persona.target.personality if axis.name in own]
        settled = persona.target.model_copy(update={"personality": kept})
        reached += convergence(settled, persona.target) >= CONVERGED_AT
    return reached / count


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:  # nothing counted (every request held by the guard): the share is unknown
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)  # (rounding: -0.000 at 0 successes)


def mean_ci(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {half:.3f}"


def row(name: str, results: list[EpisodeResult]) -> str:
    n = len(results)
    converged = [r for r in results if r.converged]
    low, high = wilson(len(converged), n)
    worse = sum(r.worse for r in results)
    worse_low, worse_high = wilson(worse, n)
    return (
        f"| {name} | {len(converged) / n:.3f} [{low:.3f}, {high:.3f}] | {mean_ci([float(r.observations) for r in converged])} "
        f"| {mean_ci([r.final_convergence for r in results])} | {worse / n:.3f} [{worse_low:.3f}, {worse_high:.3f}] "
        f"| {mean_ci([r.observed_convergence for r in results])} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=200, help="judge personas per held-out generator")
    parser.add_argument("--fit-personas", type=int, default=30, help="fit personas per training generator")
    parser.add_argument("--max-observations", type=int, default=10)
    parser.add_argument("--rllib", metavar="CHECKPOINT", help="the run_dir/checkpoint of `terrarium baseline`")
    parser.add_argument("--generators", nargs="*", default=list(GENERATORS), help="held-out generators to judge")
    parser.add_argument("--fit-all", action="store_true", help="only fit on every generator (DEFAULT_PARAMS) and exit")
    parser.add_argument("--llm-model", metavar="DIR", help="add the LLM generator (a model directory, e.g. an import)")
    parser.add_argument("--llm-cache", default="runs/persona-llm-texts.parquet", help="its Parquet text cache")
    parser.add_argument("--llm-texts", type=int, default=2, help="cached texts per judge persona")
    parser.add_argument("--persona-llm", metavar="DIR", help="add the persona LLM row: a model, checkpoint or run directory")
    parser.add_argument("--persona-llm-personas", type=int, default=20, help="judge personas it plays per fold")
    parser.add_argument("--free-text", action="store_true", help="also play it without the reply grammar")
    parser.add_argument("--similarity", choices=SIMILARITIES, default="own",
                        help="the similarity the client sends (own: each generator's own measure)")
    args = parser.parse_args()
    if args.similarity != "own":
        for name in list(GENERATORS):
            GENERATORS[name] = OtherSimilarity(GENERATORS[name], args.similarity)
    if args.fit_all:
        print(f"fitted on all generators: {fit(list(GENERATORS), args.fit_personas, args.max_observations)}")
        return

    fixed: list[tuple[str, DeltaPolicy]] = [
        ("RustyWorm heuristic", HeuristicClientPolicy()), ("expert, unguarded", ExpertClientPolicy()),
        ("expert (served: guarded)", GuardedClientPolicy(ExpertClientPolicy())),
    ]
    if args.rllib:
        from cluster.evaluation import load_checkpoint_policy

        checkpoint = CheckpointClientPolicy(load_checkpoint_policy(f"rllib:{args.rllib}"))
        fixed.append(("RLlib PPO (served: guarded)", GuardedClientPolicy(checkpoint)))
    notes = [] if args.rllib else ["RLlib PPO: skipped (no --rllib checkpoint given)"]
    if not args.persona_llm:
        notes.append("persona LLM: skipped (--persona-llm names a model directory or a trained run's checkpoint)")
    print(f"{args.personas} judge personas per held-out generator, max {args.max_observations} observations, "
          f"fit on {args.fit_personas} fit personas of each other generator; similarity: {args.similarity}; "
          f"served default: {DEFAULT_PARAMS}")
    held_outs = list(args.generators)
    if args.llm_model or args.persona_llm:
        import ray

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    if args.llm_model:
        generator = llm_generator(args)  # judged only: fitting stays on the template generators
        GENERATORS["llm"] = generator if args.similarity == "own" else OtherSimilarity(generator, args.similarity)
        held_outs.append("llm")
    llm_rows = []
    if args.persona_llm:
        constrained, free = persona_llm(args.persona_llm)
        llm_rows = [("persona LLM, apply_delta grammar (guarded)", constrained)] + (
            [("persona LLM, free text (guarded)", free)] if args.free_text else [])
    for held_out in held_outs:
        start = time.perf_counter()
        params = fit([g for g in GENERATORS if g not in (held_out, "llm")], args.fit_personas, args.max_observations)
        print(f"\n### held out: {held_out}  (fitted without it: {params})")
        print("| policy | converged@0.90 [95% CI] | mean observations to converge | mean final convergence "
              "| share ending worse [95% CI] | RustyWorm observed convergence |")
        print("|---|---|---|---|---|---|")
        rows = [*fixed, ("evidence policy (fitted without it)", EvidenceClientPolicy(params)),
                ("evidence policy (served default)", EvidenceClientPolicy(DEFAULT_PARAMS))]
        for name, policy in rows:
            results = play_all(policy, held_out, "judge", args.personas, args.max_observations)
            print(row(name, results), flush=True)
        starts = [r.start_convergence for r in results]
        validity = []
        for name, make_policy in llm_rows:
            play = play_llm(make_policy, held_out, args.persona_llm_personas, args.max_observations)
            print(row(f"{name} ({args.persona_llm_personas} personas)", play.results), flush=True)
            validity.append(f"{name}: start convergence of its {args.persona_llm_personas} personas "
                            f"{mean_ci([r.start_convergence for r in play.results])}")
            valid = play.replies - play.invalid
            low, high = wilson(valid, play.replies)
            validity.append(f"{name}: {valid} of {play.replies} replies were valid apply_delta calls "
                            f"({valid / max(1, play.replies):.3f} [{low:.3f}, {high:.3f}]; the rest fell back to the expert); "
                            f"{play.too_long} prompts did not fit the {PERSONA_LLM_CONTEXT}-token context (fell back too)")
        for line in validity:
            print(line)
        print(f"start convergence {mean_ci(starts)}; reachable by setting every axis the start has exactly on its "
              f"target (the rest stay missing): {own_axes_ceiling(held_out, args.personas):.3f}; "
              f"{time.perf_counter() - start:.0f} s")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
