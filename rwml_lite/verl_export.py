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

verl renders the prompt itself, so `worldmodel.prefill` is not applied there: the reply is scored as
the model wrote it. The reward runs where verl's reward workers run, which need rwml-lite installed.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from rwml_lite.config import Recipe, load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.prompts import template_args
from rwml_lite.records import atomic_write_json, atomic_write_text
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import TripletRecord, read_triplets

VERL_VERSION = "0.9.1"
#: TRL's loss_type -> verl's actor.loss_agg_mode (the same normalisation of the token losses)
LOSS_AGGREGATION = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "bnpo": "token-mean",
                    "dr_grpo": "seq-mean-token-sum-norm"}  # fmt: skip

#: The module verl loads (reward.custom_reward_function.path): the scoring lives in rwml-lite, this file
#: only finds the export's reward.json beside it.
REWARD_MODULE = '''"""verl's custom reward for this export, written by `rwml-lite export verl`: rwml-lite's own reward."""

from pathlib import Path

from rwml_lite.verl_export import ExportedReward

_reward = ExportedReward(Path(__file__).with_name("reward.json"))


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return _reward(solution_str, ground_truth, extra_info)
'''


class ExportedReward:
    """The score of one verl response: NextStateReward built from the export's reward.json on first use
    (verl's reward workers import the module once and call it per response)."""

    def __init__(self, settings: Path):
        self.settings, self._reward = settings, None

    def __call__(self, solution_str: str, ground_truth: str, extra_info: dict | None) -> float:
        if self._reward is None:
            from rwml_lite.config import RewardSettings
            from rwml_lite.reward import NextStateReward

            self._reward = NextStateReward.from_settings(RewardSettings(**json.loads(self.settings.read_text())))
        measure = (extra_info or {}).get("measure", "embedding")
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
        "actor_rollout_ref.model.path": m.name_or_path,
        "actor_rollout_ref.model.lora_rank": m.lora.r,
        "actor_rollout_ref.model.lora_alpha": m.lora.alpha,
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
        "reward.custom_reward_function.path": out / "reward.py",
        "reward.custom_reward_function.name": "compute_score",
        "trainer.total_epochs": g.epochs,
        "trainer.project_name": "rwml-lite",
        "trainer.experiment_name": Path(recipe.run.dir).name,
        "trainer.n_gpus_per_node": 8,
        "trainer.nnodes": 1,
    }  # fmt: skip
    if g.max_steps > 0:
        overrides["trainer.total_training_steps"] = g.max_steps
    return ["python3", "-m", "verl.trainer.main_ppo", *(f"{k}={v}" for k, v in overrides.items())]


def export(run_dir: Path, out: Path) -> dict:
    """Write the export of `run_dir` into the new folder `out`; returns what export.json holds."""
    folder = RunFolder(Path(run_dir))
    if not folder.recipe.is_file():
        raise RwmlError(
            f"{run_dir} is not a run folder (no recipe.yaml): pass the run.dir of a run that built its triplets."
        )
    recipe = load_recipe(folder.recipe)
    kept, held_out = folder.wm("rwml.jsonl"), folder.wm("val.jsonl")
    if not kept.is_file():
        raise RwmlError(
            f"{kept} does not exist: the export needs the triplets RWML trains on. Run the collect, build and filter "
            f"stages first (`rwml-lite train {folder.recipe} 'stages=[collect,build,filter]'`)."
        )
    if recipe.reward.kind.startswith("judge"):
        raise RwmlError(
            f"reward.kind={recipe.reward.kind!r} is an LLM judge, which the exported reward does not call; export a run "
            "with reward.kind binary or continuous."
        )
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise RwmlError(f"{out} exists and is not empty: export into a new folder (nothing there was changed).")
    from datasets import Dataset

    source = f"rwml_lite/{recipe.env.name}"
    train, val = read_triplets(kept), read_triplets(held_out)
    out.mkdir(parents=True, exist_ok=True)
    for name, triplets, split in (("train", train, "train"), ("val", val, "test")):
        partial = out / f".{name}.parquet.tmp"
        Dataset.from_list(rows(triplets, split, source)).to_parquet(str(partial))
        os.replace(partial, out / f"{name}.parquet")
    reward = recipe.reward.model_dump(include={"embedder", "precision", "tau_d", "kind", "batch_size"})
    atomic_write_json(out / "reward.json", reward)
    atomic_write_text(out / "reward.py", REWARD_MODULE)
    argv = command(recipe, out)
    lines = " \\\n  ".join([" ".join(argv[:3]), *(shlex.quote(a) for a in argv[3:])])  # one override a line
    atomic_write_text(
        out / "train.sh",
        f"#!/usr/bin/env bash\n# verl {VERL_VERSION}: GRPO on this export (set the GPU counts)\n{lines}\n",
    )
    summary = {
        "verl_version": VERL_VERSION,
        "run_dir": str(Path(run_dir).resolve()),
        "data_source": source,
        "train_triplets": len(train),
        "val_triplets": len(val),
        "prefill_not_applied": recipe.worldmodel.prefill,
    }
    atomic_write_json(out / "export.json", summary)
    return summary
