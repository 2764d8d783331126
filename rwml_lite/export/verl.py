"""`rwml-lite export verl RUN_DIR OUT_DIR`: hand a run's RWML training set to verl for paper-scale runs.

verl (pinned 0.9.1, checked in its source) trains GRPO from parquet files whose rows hold
`data_source`, `prompt` (chat messages, rendered by verl with the model's template), `ability`,
`reward_model` ({"style": "rule", "ground_truth": ...}) and `extra_info` (a dict passed through to
the reward), and scores each response with a custom `compute_score(data_source, solution_str,
ground_truth, extra_info)` named by `reward.custom_reward_function.path/name`. The export writes:

  train.parquet  the triplets RWML trains on (wm/rwml.jsonl: kept by the filter), each once
  val.parquet    the held-out triplets (wm/val.jsonl)
  reward.json    the recipe's reward settings; reward.py: verl's compute_score over rwml-lite's
                 own NextStateReward (cosine for observations, rounded ROUGE-L for tau2's tool replies)
  train.sh       the verl command line, from the recipe's GRPO settings
  export.json    what was exported, from which run, for which verl version

verl renders the prompt itself, so a run with a `worldmodel.prefill` is refused (verl could not start
the answers with it), as is what has no verl counterpart. The reward runs in verl's reward workers
(CPU), which need rwml-lite importable: its pins (transformers 5.17) exceed verl 0.9.1's (< 5.11), so
install it there with `pip install --no-deps rwml-lite`; the reward itself needs only torch,
sentence-transformers, pydantic and pyyaml, which a verl environment has or pip adds.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import threading
from pathlib import Path

from rwml_lite.config import Recipe, load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.prompts import template_args
from rwml_lite.records import atomic_write_json, atomic_write_text
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import TripletRecord, read_triplets
from rwml_lite.thresholds import run_reward

VERL_VERSION = "0.9.1"
#: TRL's loss_type -> verl's actor.loss_agg_mode (the same normalisation of the token losses)
LOSS_AGGREGATION = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "bnpo": "token-mean",
                    "dr_grpo": "seq-mean-token-sum-norm"}  # fmt: skip

#: The module verl loads (reward.custom_reward_function.path): the scoring lives in rwml-lite, this file
#: only finds the export's reward.json beside it.
REWARD_MODULE = '''"""verl's custom reward for this export, written by `rwml-lite export verl`: rwml-lite's own reward."""

from pathlib import Path

from rwml_lite.export.verl import ExportedReward

_reward = ExportedReward(Path(__file__).with_name("reward.json"))


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return _reward(solution_str, ground_truth, extra_info)
'''


class ExportedReward:
    """The score of one verl response: NextStateReward built from the export's reward.json on first use.
    verl's reward workers import the module once and call it per response from a thread pool, so the
    embedder is built once and used by one thread at a time (fast tokenizers are not thread-safe)."""

    def __init__(self, settings: Path):
        self.settings, self._reward, self._lock = settings, None, threading.Lock()

    def __call__(self, solution_str: str, ground_truth: str, extra_info: dict | None) -> float:
        measure = (extra_info or {}).get("measure", "embedding")
        with self._lock:
            if self._reward is None:
                from rwml_lite.config import RewardSettings
                from rwml_lite.reward import NextStateReward

                settings = RewardSettings(**json.loads(self.settings.read_text()))
                self._reward = NextStateReward.from_settings(settings)
            return self._reward.score([solution_str], [ground_truth], [measure])[0]


def rows(triplets: list[TripletRecord], split: str, data_source: str) -> list[dict]:
    """verl's rows for `triplets`: the RWML prompt as plain messages, the real next state as ground truth."""
    out = []
    for index, t in enumerate(triplets):
        messages, options = template_args(t.prompt)
        if options:
            raise RwmlError(
                f"Triplet {t.triplet_id} carries chat-template options {sorted(options)}, which verl's parquet "
                f"prompt cannot hold; export a run whose world-model prompts are plain messages."
            )
        out.append(
            {
                "data_source": data_source,
                "prompt": [{"role": m["role"], "content": m["content"]} for m in messages],
                "ability": "world_model",
                "reward_model": {"style": "rule", "ground_truth": t.next_observation},
                "extra_info": {
                    "split": split,
                    "index": index,
                    "triplet_id": t.triplet_id,
                    "measure": t.measure,
                    "kind": t.kind,
                },
            }  # fmt: skip
        )
    return out


def command(recipe: Recipe, out: Path) -> list[str]:
    """verl's GRPO command line with the recipe's settings (verl 0.9.1 keys)."""
    m, g = recipe.model, recipe.grpo
    overrides = {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": str(g.scale_rewards != "none").lower(),
        "data.train_files": out / "train.parquet",
        "data.val_files": out / "val.parquet",
        "data.prompt_key": "prompt",
        "data.train_batch_size": g.batch_size,
        "data.max_prompt_length": m.max_seq_length - g.max_completion_length,
        "data.max_response_length": g.max_completion_length,
        "data.seed": recipe.seed,
        "actor_rollout_ref.model.path": portable(m.name_or_path),
        "actor_rollout_ref.actor.optim.lr": g.learning_rate,
        "actor_rollout_ref.actor.optim.weight_decay": g.weight_decay,
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": g.warmup_ratio,
        "actor_rollout_ref.actor.ppo_mini_batch_size": g.batch_size,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": g.micro_batch_size,
        "actor_rollout_ref.actor.use_kl_loss": str(g.beta > 0).lower(),
        "actor_rollout_ref.actor.kl_loss_coef": g.beta,
        "actor_rollout_ref.actor.clip_ratio_low": g.epsilon,
        "actor_rollout_ref.actor.clip_ratio_high": g.epsilon if g.epsilon_high is None else g.epsilon_high,
        "actor_rollout_ref.actor.loss_agg_mode": LOSS_AGGREGATION[g.loss_type],
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.n": g.group_size,
        "actor_rollout_ref.rollout.temperature": g.temperature,
        "actor_rollout_ref.rollout.seed": recipe.seed,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": g.micro_batch_size,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": g.micro_batch_size,
        "reward.custom_reward_function.path": out / "reward.py",
        "reward.custom_reward_function.name": "compute_score",
        "trainer.total_epochs": math.ceil(g.epochs),
        "trainer.save_freq": g.save_steps,
        "trainer.logger": "[console,tensorboard]",
        "trainer.project_name": "rwml-lite",
        "trainer.experiment_name": Path(recipe.run.dir).name,
        "trainer.n_gpus_per_node": 8,
        "trainer.nnodes": 1,
    }  # fmt: skip
    if m.lora is not None:  # else full fine-tuning, the paper's setting
        overrides.update({
            "actor_rollout_ref.model.lora_rank": m.lora.r,
            "actor_rollout_ref.model.lora_alpha": m.lora.alpha,
            "actor_rollout_ref.model.target_modules": "[" + ",".join(m.lora.target_modules) + "]",
        })  # fmt: skip
    if g.loss_type == "dr_grpo":  # a constant divisor: verl would divide by each micro batch's longest reply
        overrides["actor_rollout_ref.actor.loss_scale_factor"] = g.max_completion_length
    if g.max_steps > 0:
        overrides["trainer.total_training_steps"] = g.max_steps
    return ["python3", "-m", "verl.trainer.main_ppo", *(f"{k}={v}" for k, v in overrides.items())]


def portable(name_or_path: str) -> str:
    """A model or embedder name verl's machines can load: a Hub id as it is, a local folder (or a
    pkg: file, a GGUF converted once) as its absolute path."""
    from rwml_lite.sources import checkpoint_folder

    local = Path(checkpoint_folder(name_or_path))
    return str(local.resolve()) if local.exists() else name_or_path


def refusals(recipe: Recipe, train: list[TripletRecord], val: list[TripletRecord]) -> list[str]:
    """What the export cannot carry over faithfully, each with the fix."""
    g, problems = recipe.grpo, []
    if recipe.reward.kind.startswith("judge"):
        problems.append(f"reward.kind={recipe.reward.kind!r} is an LLM judge, which the exported reward does not call; "
                        "use binary or continuous")  # fmt: skip
    if recipe.worldmodel.prefill:
        problems.append(f"worldmodel.prefill={recipe.worldmodel.prefill!r} starts every answer here, and verl renders "
                        "prompts itself without it; export a run built with an empty prefill")  # fmt: skip
    if recipe.worldmodel.close_at_end:
        problems.append("worldmodel.close_at_end reads a prediction whose <next_state> is still open, and the exported "
                        "reward scores it 0 as the paper does; export a run built without it")  # fmt: skip
    if g.scale_rewards == "batch":
        problems.append("grpo.scale_rewards='batch' has no verl counterpart (its GRPO scales by the group's std); "
                        "use group or none")  # fmt: skip
    if recipe.model.lora and (recipe.model.lora.last_layers or recipe.model.lora.dropout):
        problems.append("model.lora.last_layers and model.lora.dropout have no verl counterpart; leave them unset")
    if len(train) < g.batch_size:
        problems.append(
            f"the run kept {len(train)} triplets, fewer than one verl step of grpo.batch_size={g.batch_size}"
        )
    if not val:
        problems.append("wm/val.jsonl holds no held-out triplets, and verl validates on them")
    return problems


def export(run_dir: Path, out: Path) -> dict:
    """Write the export of `run_dir` into the new folder `out`; returns what export.json holds."""
    folder = RunFolder(Path(run_dir))
    if not folder.recipe.is_file():
        raise RwmlError(
            f"{run_dir} is not a run folder (no recipe.yaml): pass the run.dir of a run that built its triplets."
        )
    recipe = load_recipe(folder.recipe)
    kept, held_out = folder.wm("rwml.jsonl"), folder.wm("val.jsonl")
    if not (kept.is_file() and held_out.is_file()):
        raise RwmlError(
            f"{kept} does not exist: the export needs the triplets RWML trains on. Run the collect, build and filter "
            f"stages first (`rwml-lite train {folder.recipe} 'stages=[collect,build,filter]'`)."
        )
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise RwmlError(f"{out} exists and is not empty: export into a new folder (nothing there was changed).")
    train, val = read_triplets(kept), read_triplets(held_out)
    problems = refusals(recipe, train, val)
    if problems:
        raise RwmlError(f"{run_dir} cannot be exported to verl as it is: " + "; ".join(problems) + ".")
    from datasets import Dataset

    source = f"rwml_lite/{recipe.env.name}"
    tables = {"train": rows(train, "train", source), "val": rows(val, "test", source)}  # refusals come before files
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        partial = out / f".{name}.parquet.tmp"
        Dataset.from_list(table).to_parquet(str(partial))
        os.replace(partial, out / f"{name}.parquet")
    # tau_d as this run uses it (the value the filter measured, where the recipe says auto)
    reward = run_reward(recipe, folder).model_dump(include={"embedder", "precision", "tau_d", "kind", "batch_size"})
    reward["embedder"] = portable(reward["embedder"])
    if reward["precision"] in ("8bit", "4bit"):  # bitsandbytes needs a GPU; verl's reward workers ask for none
        reward["precision"] = "float32"
    atomic_write_json(out / "reward.json", reward)
    atomic_write_text(out / "reward.py", REWARD_MODULE)
    argv = command(recipe, out)
    lines = " \\\n  ".join([" ".join(argv[:3]), *(shlex.quote(a) for a in argv[3:])])  # one override a line
    atomic_write_text(out / "train.sh", f"#!/usr/bin/env bash\n# verl {VERL_VERSION}: GRPO on this export (set the GPU counts)\n{lines}\n")  # fmt: skip
    summary = {
        "verl_version": VERL_VERSION,
        "run_dir": str(Path(run_dir).resolve()),
        "data_source": source,
        "train_triplets": len(train),
        "val_triplets": len(val),
        "reward": reward,
        "not_carried": "the learning-rate schedule (grpo.lr_schedule; verl keeps it constant) and the "
        "tokenizer's chat template override (model.chat_template): set them in train.sh if they matter",
    }
    atomic_write_json(out / "export.json", summary)
    return summary
