"""`rwml-lite selftest RECIPE`: the recipe's own stack (model, backend, 4-bit, vLLM or server, embedder, every
stage of its `stages`) at toy scale on this machine, in a throwaway run folder; what each stage cost here, and a
forecast of the full recipe from those costs and the recipe's volumes.

Toy scale keeps what sets the cost of one unit of work and shrinks how many units there are: collect plays one
wave of episodes (`agent.parallel_episodes` of them sample together), each trainer takes two optimizer steps at
the recipe's batch shapes, eval plays one wave per split. The forecast adds to each stage's toy time what the
full stage does beyond it: collect's and eval's further agent turns in rounds at full concurrency (a round's
seconds measured in the toy collect), the trainers' further optimizer steps at their own measured seconds per
step (the first step's warm-up already counted), the filter's predictions per training triplet. Expected volumes
are this run's own (episode lengths, triplets per episode, the filter's kept share); the upper bound lets every
episode run to its step limit and keeps every triplet, as `plan` counts."""

from __future__ import annotations

import json
import math
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rwml_lite import rollout
from rwml_lite.config import Recipe
from rwml_lite.errors import RwmlError
from rwml_lite.plan.volumes import eval_tasks, turns
from rwml_lite.records import read_jsonl
from rwml_lite.runfolder import RunFolder, read_manifest
from rwml_lite.schemas import read_triplets

#: optimizer steps each trainer takes at toy scale
TOY_STEPS = 2
#: the plan phase whose memory each stage's peak is compared with
PHASES = {"collect": "generation", "filter": "filter SFT", "rwml": "RWML GRPO", "wm_sft": "WM SFT",
          "policy": "Policy RL", "eval": "generation"}  # fmt: skip


@dataclass
class Part:
    """Work a full stage does beyond the toy run's: seconds per unit (measured), and how many units more."""

    unit: str
    per_unit: float
    expected_units: float
    upper_units: float


@dataclass
class Measured:
    """One stage at toy scale, and its forecast at full scale (seconds): the toy run's time plus the work beyond it."""

    stage: str
    seconds: float
    peak_gpu_gib: float | None = None
    peak_rss_gib: float = 0.0
    fixed: float = 0.0  # the toy run's own seconds (loading, warm-up and the toy's work included)
    parts: list[Part] = field(default_factory=list)

    @property
    def expected(self) -> float:
        return self.fixed + sum(p.per_unit * p.expected_units for p in self.parts)

    @property
    def upper(self) -> float:
        return self.fixed + sum(p.per_unit * p.upper_units for p in self.parts)


@dataclass
class SelfTest:
    """What a selftest measured on this machine, stage by stage, and its rates."""

    recipe: str
    device: str
    stages: list[Measured] = field(default_factory=list)
    sampling_tokens_per_second: float | None = None
    sampling_sequences: int = 0
    embedder_texts_per_second: float | None = None

    def as_json(self) -> dict:
        stages = [{**asdict(m), "expected_seconds": m.expected, "upper_seconds": m.upper} for m in self.stages]
        return {**asdict(self), "stages": stages, "expected_hours": self.hours("expected"),
                "upper_hours": self.hours("upper")}  # fmt: skip

    def hours(self, which: str) -> float:
        return sum(getattr(m, which) for m in self.stages) / 3600


def measurements(name: str) -> Path:
    """Where `rwml-lite selftest NAME` writes its measurements by default, and `train NAME` reads its forecast."""
    return Path("runs/selftest") / f"{name}.json"


def stage_forecast(path: Path) -> dict[str, float] | None:
    """stage -> expected seconds from a selftest's measurements, None where there are none."""
    if not path.exists():
        return None
    return {m["stage"]: m["expected_seconds"] for m in json.loads(path.read_text())["stages"]}


def toy_overrides(recipe: Recipe, run_dir: Path) -> list[str]:
    """The recipe at toy scale: one wave of episodes to collect and per eval split, two steps per trainer."""
    c, e = recipe.collect, recipe.eval
    parallel = recipe.agent.parallel_episodes
    collect_tasks = min(c.num_tasks, max(2, math.ceil(parallel / c.rollouts_per_task)))
    eval_tasks = max(1, parallel // e.runs)
    if e.num_tasks:
        eval_tasks = min(eval_tasks, e.num_tasks)
    return [
        f"run.dir={run_dir}", f"collect.num_tasks={collect_tasks}", f"eval.num_tasks={eval_tasks}",
        f"grpo.max_steps={TOY_STEPS}", f"policy.max_steps={TOY_STEPS}", "run.report_to=none",
    ]  # fmt: skip


def _with(recipe: Recipe, overrides: list[str]) -> Recipe:
    from rwml_lite.config import build_recipe

    return build_recipe(recipe.model_dump(mode="json"), overrides, "selftest")


def _sft_epochs(section, examples: int) -> float:
    """Epochs that make TOY_STEPS optimizer steps over `examples` at the section's batch size."""
    return min(section.epochs, TOY_STEPS / max(math.ceil(examples / section.batch_size), 1))


class GpuPeak:
    """The most GPU memory in use on the device while the block runs, polled: vLLM's weights and KV cache live
    outside PyTorch's allocator statistics (Unsloth's standby allocates them through vLLM's own), the CUDA
    context too. None without a GPU."""

    def __init__(self, every: float = 0.2):
        self.every, self.gib, self._done = every, None, threading.Event()

    def __enter__(self) -> GpuPeak:
        import torch

        if torch.cuda.is_available():
            self.gib = 0.0
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        import torch

        while True:
            free, total = torch.cuda.mem_get_info()
            self.gib = max(self.gib, (total - free) / 2**30)
            if self._done.wait(self.every):
                return

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self.gib is not None:
            self._thread.join()


def _rss_gib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_selftest(recipe: Recipe, name: str, keep: Path | None = None, say=print) -> SelfTest:
    """Run every stage of `recipe` at toy scale; raises RwmlError naming the stage and its recipe fields when one
    fails. The toy run's folder is removed afterwards unless `keep` names where it goes."""
    import torch

    from rwml_lite.pipeline import depends_on, run

    work = Path(tempfile.mkdtemp(prefix="rwml-lite-selftest-")) if keep is None else keep
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    result = SelfTest(name, device)
    toy = _with(recipe, toy_overrides(recipe, work / "run"))
    folder = RunFolder(Path(toy.run.dir))
    rounds: list[tuple[float, int]] = []
    try:
        for stage in recipe.stages:
            toy = _sized_for(toy, stage, folder)
            say(f"selftest: {stage} at toy scale")
            rollout.ROUNDS = rounds if stage == "collect" else None  # the round time forecast uses collect's
            try:
                with GpuPeak() as peak:
                    run(toy, [stage])
            except Exception as e:  # whatever the stage raised: the user needs the stage and its fields
                fields = ", ".join(depends_on(recipe, stage))
                raise RwmlError(
                    f"selftest: the {stage} stage failed at toy scale on this machine ({device}): {e} The recipe "
                    f"fields it depends on: {fields}. `rwml-lite train` runs the same code at full scale."
                ) from e
            seconds = read_manifest(folder)["stages"][stage]["seconds"]
            result.stages.append(Measured(stage, seconds, peak_gpu_gib=peak.gib, peak_rss_gib=_rss_gib()))
        _rates(recipe, toy, folder, result)
        _forecast(recipe, folder, result, _round_seconds(rounds))
    finally:
        rollout.ROUNDS = None
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _sized_for(toy: Recipe, stage: str, folder: RunFolder) -> Recipe:
    """SFT epochs for TOY_STEPS steps over the triplets the toy run has by the time `stage` starts."""
    if stage == "filter" and toy.worldmodel.filter.enabled:
        examples = len(read_jsonl(folder.wm("val.jsonl")))  # the filter model trains on the held-out triplets
        return _with(toy, [f"worldmodel.filter.epochs={_sft_epochs(toy.worldmodel.filter, examples)}"])
    if stage == "wm_sft":
        examples = len(read_jsonl(folder.wm("rwml.jsonl")))
        return _with(toy, [f"wm_sft.epochs={_sft_epochs(toy.wm_sft, examples)}"])
    return toy


def _rates(recipe: Recipe, toy: Recipe, folder: RunFolder, result: SelfTest) -> None:
    """Sampling tokens/s as GRPO samples (grpo.batch_size prompts x group_size at its temperature and length,
    from the base model), and the embedder's texts/s."""
    from transformers import AutoTokenizer

    from rwml_lite.models import Sampling, sampler
    from rwml_lite.reward import Embedder
    from rwml_lite.sources import checkpoint_folder
    from rwml_lite.worldmodel import predict

    path = folder.wm("train.jsonl")
    triplets = read_triplets(path) if path.exists() else []
    if not triplets:
        return
    g, prefill = recipe.grpo, recipe.worldmodel.prefill
    prompts = (triplets * g.batch_size)[: g.batch_size]
    generator = sampler(toy.model)
    started = time.monotonic()
    predictions = predict(
        generator, prompts, g.group_size, Sampling(g.temperature, g.max_completion_length, prefill=prefill)
    )
    seconds = time.monotonic() - started
    replies = [p for group in predictions for p in group]
    if all(getattr(p, "token_ids", None) is not None for p in replies):  # every backend of ours returns its ids
        tokens = sum(len(p.token_ids) for p in replies)
    else:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_folder(recipe.model.name_or_path))
        tokens = sum(len(tokenizer(p.removeprefix(prefill))["input_ids"]) for p in replies)
    result.sampling_tokens_per_second = tokens / seconds
    result.sampling_sequences = g.batch_size * g.group_size
    if recipe.reward.kind in ("binary", "continuous"):
        embedder = Embedder.from_settings(recipe.reward)
        texts = [t.next_observation for t in triplets] * max(1, 256 // len(triplets))
        embedder.encode(texts[:8])  # warm-up
        started = time.monotonic()
        embedder.encode(texts)
        result.embedder_texts_per_second = len(texts) / (time.monotonic() - started)


def _step_times(folder: RunFolder, stage: str) -> list[float]:
    """Seconds of each optimizer step the stage logged: GRPO's and the policy stage's `step_time`; for TRL's SFT
    its train_runtime spread over its steps."""
    path = folder.metrics(stage)
    logs = read_jsonl(path) if path.exists() else []
    times = [m["step_time"] for m in logs if "step_time" in m]
    if times:
        return times
    runtime = next((m for m in logs if "train_runtime" in m), None)
    return [runtime["train_runtime"] / runtime["step"]] * runtime["step"] if runtime and runtime.get("step") else []


def _round_seconds(rounds: list[tuple[float, int]]) -> float:
    """Seconds of an agent round (sampling, stepping the environments) at the highest concurrency the rounds
    reached: the gaps between successive rounds that sampled for that many episodes, the first (warm-up) left
    out where there are others."""
    gaps = [(later[0] - now[0], now[1]) for now, later in zip(rounds, rounds[1:], strict=False)]
    if not gaps:
        return 0.0
    most = max(count for _, count in gaps)
    full = [seconds for seconds, count in gaps if count == most]
    full = full[1:] or full
    return sum(full) / len(full)


def _forecast(recipe: Recipe, folder: RunFolder, result: SelfTest, round_seconds: float) -> None:
    """Each stage's work beyond the toy run, expected (this run's rates) and upper (the budgets)."""
    c, a, f, g, w, e = recipe.collect, recipe.agent, recipe.worldmodel.filter, recipe.grpo, recipe.wm_sft, recipe.eval
    summaries = {s: v.get("summary", {}) for s, v in read_manifest(folder)["stages"].items()}
    toy_episodes = max(summaries.get("collect", {}).get("episodes", 1), 1)
    toy_turns = summaries.get("collect", {}).get("steps", 0)
    episodes = c.num_tasks * c.rollouts_per_task
    turns_limit = turns(recipe, c.max_steps)
    # triplets at full scale: as many per episode as the toy run made, or one per turn of every episode
    triplets = {"expected": episodes * summaries.get("build", {}).get("triplets", 0) / toy_episodes,
                "upper": episodes * turns_limit}  # fmt: skip
    val, train = recipe.worldmodel.val_fraction, 1 - recipe.worldmodel.val_fraction
    filtered = summaries.get("filter", {})
    kept = {"expected": filtered.get("kept", 1) / max(filtered.get("train_triplets", 1), 1), "upper": 1.0}

    def rounds(turns: float, done: float, episodes: int) -> float:
        """Rounds at full concurrency for the agent turns beyond those done."""
        return max(turns - done, 0) / max(min(a.parallel_episodes, episodes), 1)

    def steps(epochs: float, examples: dict, batch: int) -> dict:
        return {k: math.ceil(epochs * n / batch) for k, n in examples.items()}

    for m in result.stages:
        m.fixed = m.seconds  # the toy run's own time, to which the work beyond it adds
        if m.stage == "collect":
            expected = episodes * toy_turns / toy_episodes
            m.parts = [Part("agent round", round_seconds, rounds(expected, toy_turns, episodes),
                            rounds(episodes * turns_limit, toy_turns, episodes))]  # fmt: skip
        elif m.stage == "build":
            m.parts = [Part("episode", m.seconds / toy_episodes, episodes - toy_episodes, episodes - toy_episodes)]
        elif m.stage == "filter" and f.enabled:  # the filter model's SFT on the held-out triplets, then K
            times = _step_times(folder, "filter")  # predictions of each training triplet
            _trainer(m, times, steps(f.epochs, {k: n * val for k, n in triplets.items()}, f.batch_size))
            toy_train = max(filtered.get("train_triplets", 1), 1)
            predictions = (m.seconds - sum(times)) / toy_train
            m.parts.append(
                Part("training triplet", predictions, *(max(n * train - toy_train, 0) for n in triplets.values()))
            )
        elif m.stage == "rwml":
            full = {
                k: g.max_steps or math.ceil(g.epochs * n * train * kept[k] / g.batch_size) for k, n in triplets.items()
            }
            _trainer(m, _step_times(folder, "rwml"), full)
        elif m.stage == "wm_sft":
            _trainer(
                m,
                _step_times(folder, "wm_sft"),
                steps(w.epochs, {k: n * train * kept[k] for k, n in triplets.items()}, w.batch_size),
            )
        elif m.stage == "policy":
            _trainer(
                m,
                _step_times(folder, "policy"),
                {"expected": recipe.policy.max_steps, "upper": recipe.policy.max_steps},
            )
        elif m.stage == "eval":
            played = [ep for path in sorted((folder.root / "eval").glob("episodes_*.jsonl")) for ep in read_jsonl(path)]
            policies = len(list((folder.root / "eval").glob("episodes_*.jsonl")))
            per_episode = sum(len(ep["steps"]) for ep in played) / max(len(played), 1)
            each = sum(n or 1 for n in eval_tasks(recipe)) * e.runs
            done = per_episode * len(played)
            m.parts = [Part("agent round", round_seconds, rounds(policies * each * per_episode, done, each),
                            rounds(policies * each * turns(recipe, e.max_steps), done, each))]  # fmt: skip


def _trainer(m: Measured, times: list[float], steps: dict) -> None:
    """A trainer's steps beyond the toy run's, at the mean of its steps after the first (warm-up)."""
    later = times[1:] or times
    per_step = sum(later) / len(later) if later else 0.0
    done = len(times)
    m.parts.append(Part("optimizer step", per_step, max(steps["expected"] - done, 0), max(steps["upper"] - done, 0)))


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 60:.1f} min"
        if seconds < 3600
        else f"{seconds / 3600:.1f} h"
        if seconds < 72 * 3600
        else (f"{seconds / 86400:.1f} days")
    )


def tables(result: SelfTest, plan) -> list:
    """Rich tables: each stage's toy cost (beside `plan`'s memory for its phase on a GPU), and the forecast."""
    from rich.table import Table

    gpu = result.device != "CPU"
    rows = Table("stage", "toy s", *(["GPU GiB", "plan GiB"] if gpu else []), "RSS GiB", "scales with", "s / unit",
                 "expected", "upper", title=f"{result.recipe} at toy scale on {result.device}, and its forecast")  # fmt: skip
    for m in result.stages:
        phase = PHASES.get(m.stage)
        planned = f"{plan.phase_gib(phase):.1f}" if phase in plan.phases else ""
        memory = [f"{m.peak_gpu_gib:.1f}", planned] if gpu else []
        rows.add_row(m.stage, f"{m.seconds:.0f}", *memory, f"{m.peak_rss_gib:.1f}",
                     ", ".join(p.unit for p in m.parts) or "fixed", ", ".join(f"{p.per_unit:.1f}" for p in m.parts),
                     _duration(m.expected), _duration(m.upper))  # fmt: skip
    rows.caption = (
        f"The full recipe: {_duration(result.hours('expected') * 3600)} expected (this run's episode lengths, "
        f"triplets per episode and kept share), {_duration(result.hours('upper') * 3600)} at most (every episode to "
        "its step limit, every triplet kept)."
    )
    rates = []
    if result.sampling_tokens_per_second:
        rates.append(f"sampling {result.sampling_tokens_per_second:,.0f} tokens/s ({result.sampling_sequences} "
                     "sequences at once, as GRPO samples)")  # fmt: skip
    if result.embedder_texts_per_second:
        rates.append(f"embedder {result.embedder_texts_per_second:,.0f} texts/s")
    return [rows, "; ".join(rates)] if rates else [rows]


def over_card(result: SelfTest, recipe: Recipe, card_gib: float | None) -> str | None:
    """Why the run would not fit `card_gib`: the first stage whose measured peak exceeds it, with its fields."""
    from rwml_lite.pipeline import depends_on

    for m in result.stages:
        if card_gib and m.peak_gpu_gib is not None and m.peak_gpu_gib > card_gib:
            return (
                f"selftest: the {m.stage} stage peaked at {m.peak_gpu_gib:.1f} GiB of GPU memory, more than the "
                f"{card_gib:.0f} GiB card; the recipe fields that size it: {', '.join(depends_on(recipe, m.stage))}. "
                "`rwml-lite plan` shows which part of it grows with which field."
            )
    return None
