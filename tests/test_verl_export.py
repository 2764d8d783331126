"""`rwml-lite export verl`: a run's RWML triplets as verl's parquet rows, verl's compute_score over our own
reward, and the verl command line built from the recipe."""

from __future__ import annotations

import importlib.util
import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from conftest import REPO, rwml_lite, triplet_record
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.export.verl import export
from rwml_lite.reward import NextStateReward
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import write_triplets
from rwml_lite.thresholds import run_reward

ROOM = "You arrive at countertop 1. On the countertop 1, you see a apple 2, a knife 1, and a mug 3."
TOOL_REPLY = '{"reservation_id": "EHGLP3", "status": "cancelled", "refund": 327.0}'


#: the CPU demo's recipe with what verl can carry: no prefill, LoRA in every layer, the paper's binary reward
EXPORTABLE = [
    "reward.kind=binary",
    "worldmodel.prefill=''",
    "worldmodel.close_at_end=false",
    "model.lora.last_layers=null",
]


def run_folder(tmp_path, *overrides: str):
    """A run folder as the filter leaves it: the recipe, 4 kept training triplets (one a tau2 tool reply
    scored by ROUGE) and 2 held-out ones."""
    run = tmp_path / "run"
    recipe = load_recipe(REPO / "recipes/demo_cpu.yaml", [*EXPORTABLE, f"run.dir={run}", *overrides])
    (run / "wm").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    kept = [
        triplet_record("e1/0", next_observation=ROOM, prompt=[{"role": "system", "content": "You model the world."},
                                                               {"role": "user", "content": "go to countertop 1"}]),
        triplet_record("e1/1", next_observation="You pick up the mug 3 from the countertop 1."),
        triplet_record("e2/0", next_observation="Nothing happens."),
        triplet_record("e3/0", next_observation=TOOL_REPLY, kind="tool", measure="rouge"),
    ]  # fmt: skip
    write_triplets(run / "wm/rwml.jsonl", kept)
    write_triplets(run / "wm/val.jsonl", [triplet_record("e9/0", next_observation=ROOM), triplet_record("e9/1")])
    (run / "wm/thresholds.json").write_text(json.dumps({"reward": {"tau_d": 0.3125}}))  # as the filter measured it
    return run, recipe, kept


def test_every_kept_triplet_is_one_verl_row_with_its_prompt_and_ground_truth(tmp_path):
    from datasets import load_dataset

    run, _, kept = run_folder(tmp_path)
    result = rwml_lite("export", "verl", str(run), str(tmp_path / "verl"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 training and 2 validation triplets" in result.stdout
    train = load_dataset("parquet", data_files=str(tmp_path / "verl/train.parquet"))["train"]
    assert [r["extra_info"]["triplet_id"] for r in train] == [t.triplet_id for t in kept]  # each once, in order
    for row, t in zip(train, kept):
        assert row["data_source"] == "rwml_lite/textworld_express" and row["ability"] == "world_model"
        assert row["prompt"] == t.prompt
        assert row["reward_model"] == {"style": "rule", "ground_truth": t.next_observation}
        assert row["extra_info"]["measure"] == t.measure and row["extra_info"]["split"] == "train"
    val = load_dataset("parquet", data_files=str(tmp_path / "verl/val.parquet"))["train"]
    assert [r["extra_info"]["triplet_id"] for r in val] == ["e9/0", "e9/1"]
    summary = json.loads((tmp_path / "verl/export.json").read_text())
    assert summary["verl_version"] == "0.9.1" and (summary["train_triplets"], summary["val_triplets"]) == (4, 2)
    assert json.loads((tmp_path / "verl/reward.json").read_text())["tau_d"] == 0.3125  # the run's, not "auto"


def test_the_exported_compute_score_gives_next_state_rewards_own_scores(tmp_path):
    run, recipe, kept = run_folder(tmp_path)
    export(run, tmp_path / "verl")
    spec = importlib.util.spec_from_file_location("exported_reward", tmp_path / "verl/reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = [  # (completion, triplet): a hit, a miss, no tag at all, and tau2 tool replies (ROUGE)
        (f"<think>I walk there.</think><next_state>{ROOM}</next_state>", kept[0]),
        ("<next_state>The sky turns purple and whales sing over the ocean.</next_state>", kept[1]),
        ("I think something happens.", kept[2]),
        (f"<next_state>{TOOL_REPLY}</next_state>", kept[3]),
        ('<next_state>{"reservation_id": "EHGLP3", "status": "active"}</next_state>', kept[3]),
    ]

    def verl_call(case):  # as verl's naive reward manager calls it: by keyword, from a thread pool
        completion, t = case
        extra = {"measure": t.measure, "num_turns": 1, "rollout_reward_scores": {}}
        return module.compute_score(data_source="rwml_lite/textworld_express", solution_str=completion,
                                    ground_truth=t.next_observation, extra_info=extra)  # fmt: skip

    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        exported = list(pool.map(verl_call, cases))
    ours = NextStateReward.from_settings(run_reward(recipe, RunFolder(run))).score(
        [c for c, _ in cases], [t.next_observation for _, t in cases], [t.measure for _, t in cases]
    )
    assert exported == ours
    assert exported[:4] == [1.0, 0.0, 0.0, 1.0]  # binary at the measured tau_d; an exact tool reply has ROUGE-L 1
    assert 0.0 < exported[4] < 1.0  # a partial tool reply: ROUGE-L F1 rounded to 0.2


def test_the_verl_command_carries_the_recipes_grpo_settings_and_the_export(tmp_path):
    run, recipe, _ = run_folder(tmp_path, "grpo.max_steps=40")
    out = tmp_path / "verl"
    export(run, out)
    script = (out / "train.sh").read_text()
    g = recipe.grpo
    for setting in [
        "python3 -m verl.trainer.main_ppo", "algorithm.adv_estimator=grpo",
        f"data.train_files={out.resolve()}/train.parquet", f"data.val_files={out.resolve()}/val.parquet",
        f"actor_rollout_ref.rollout.n={g.group_size}", f"actor_rollout_ref.actor.optim.lr={g.learning_rate}",
        f"data.train_batch_size={g.batch_size}", f"data.max_response_length={g.max_completion_length}",
        f"trainer.total_epochs={math.ceil(g.epochs)}", "trainer.total_training_steps=40",
        f"reward.custom_reward_function.path={out.resolve()}/reward.py", "reward.custom_reward_function.name=compute_score",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean", f"trainer.save_freq={g.save_steps}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={g.micro_batch_size}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={g.micro_batch_size}",
    ]:  # fmt: skip
        assert setting in script, setting
    assert script.startswith("#!/usr/bin/env bash\n# verl 0.9.1")
    # the demo's model is a GGUF file inside a package: verl gets the folder it converts to, by absolute path
    model_path = next(line for line in script.splitlines() if "actor_rollout_ref.model.path=" in line)
    assert model_path.split("=", 1)[1].rstrip(" \\").startswith("/")


def test_an_export_is_refused_before_the_filter_ran_into_a_used_folder_or_with_a_judge(tmp_path):
    run, _, _ = run_folder(tmp_path)
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(RwmlError, match="exists and is not empty: export into a new folder"):
        export(run, used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    (run / "wm/rwml.jsonl").unlink()
    with pytest.raises(RwmlError, match=r"rwml.jsonl does not exist.*Run the collect, build and filter stages"):
        export(run, tmp_path / "new")
    for name, overrides, says in [
        ("judged", ["reward.kind=judge_binary", "reward.judge_endpoint=http://localhost:1/v1"], "reward.kind='judge_binary' is an LLM judge"),
        ("prefilled", ["worldmodel.prefill=<next_state>"], "worldmodel.prefill='<next_state>' starts every answer here"),
        ("batch-std", ["grpo.scale_rewards=batch"], "grpo.scale_rewards='batch' has no verl counterpart"),
        ("big-steps", ["grpo.batch_size=8", "grpo.micro_batch_size=8"], "kept 4 triplets, fewer than one verl step of grpo.batch_size=8"),
    ]:  # fmt: skip
        refused, _, _ = run_folder(tmp_path / name, *overrides)
        with pytest.raises(RwmlError, match=says):
            export(refused, tmp_path / f"{name}-out")
        assert not (tmp_path / f"{name}-out").exists()  # refused before anything was written
