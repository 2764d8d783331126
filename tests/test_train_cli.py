"""End to end through the real CLI: a tiny Qwen3 trains 2 GRPO steps on real TextWorldExpress games."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import require, rwml_lite, tiny_recipe
from rwml_lite.config import Recipe
from rwml_lite.records import read_jsonl

pytestmark = pytest.mark.slow  # a whole `train` through the CLI


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_qwen3):
    require(__import__("shutil").which("java") is not None, "TextWorldExpress needs Java")
    folder = tmp_path_factory.mktemp("cli")
    base_before = {k: v.clone() for k, v in load_file(tiny_qwen3 / "model.safetensors").items()}
    wide = {**__import__("os").environ, "COLUMNS": "160"}  # a terminal's width, so the progress line is not cut
    result = rwml_lite("train", str(tiny_recipe(folder, tiny_qwen3)), env=wide)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run", base_before, tiny_qwen3, result


def test_lora_weights_changed_and_base_weights_did_not(trained_run):
    run, base_before, model_dir, _ = trained_run
    adapter = load_file(run / "checkpoints/rwml/adapter/adapter_model.safetensors")
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)  # only LoRA weights were trained
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert any(v.abs().max() > 0 for v in lora_b)  # PEFT starts lora_B at zero: nonzero means GRPO moved it
    base_after = load_file(model_dir / "model.safetensors")
    assert base_after.keys() == base_before.keys()
    assert all(torch.equal(base_after[k], base_before[k]) for k in base_before)


def test_grpo_ran_the_recipe_steps_and_logged_reward_and_zero_variance_groups(trained_run):
    run = trained_run[0]
    logs = [m for m in read_jsonl(run / "metrics/rwml.jsonl") if "reward" in m]
    assert [m["step"] for m in logs] == [1, 2]
    assert all("frac_reward_zero_std" in m and "reward_std" in m for m in logs)
    state = json.loads((run / "checkpoints/rwml/checkpoint-2/trainer_state.json").read_text())
    assert state["global_step"] == 2
    # 2 prompts x 4 completions per step in micro batches of 4: two backward passes per optimizer step
    assert json.loads((run / "checkpoints/rwml/trainer_config.json").read_text())["gradient_accumulation_steps"] == 2
    assert list((run / "tensorboard/rwml").glob("events.out.tfevents.*"))


#: The seeded tiny run's numbers, recorded on an AMD EPYC (2026-12-08). Every one of them is computed from sampled
#: tokens: the tiny model is float32, whose logits two CPU kinds compute alike to ~1e-6 (bf16 ones differ by ~1e-2),
#: and torch's CPU generator draws the same numbers on both, so a sample differs only where a draw falls within
#: ~1e-6 of a boundary between two tokens' probabilities (or, after step 1, where a LoRA weight's gradient is within
#: float32 noise of zero and Adam's first update, about lr * sign(gradient), takes the other sign). That is rare
#: enough that the values are the same on an Intel Xeon; where it happens, a sample changed and the values must be
#: recorded again. The tolerances are float32 rounding, not a margin for changed samples: one changed completion
#: moves a reward by 1/8, far outside them.
#:
#: Per GRPO step, from metrics/rwml.jsonl: the mean reward of the 8 completions (2 prompts x 4), the share of the 2
#: groups whose rewards differ, and the logged loss. With grpo.beta 0 and one update per generation, TRL's
#: probability ratio is exp(logp - logp.detach()) = 1 exactly, so the loss is -sum(advantage x completion length) /
#: completion tokens ("dapo"): a function of the rewards and lengths alone, not of the logits' last digits. Recorded
#: to 1e-6; the micro batches' sums in another order move it by ~1e-8.
PINNED = {"reward": [0.75, 0.625], "signal_share": [0.5, 1.0], "loss": [-0.0538115, -0.0435356]}
#: Per evaluated variant, from eval/<variant>.json: task success % over the 2 held-out games (neither won), the
#: share of the agent's 6 turns that were invalid, and the world model's hits % over the 3 held-out triplets at tau_d
#: 1.0 (a hit is a tagged prediction), all counts of samples. Two GRPO steps at lr 0.01 move the adapter's logits too
#: little to change a seeded sample here: rwml plays and predicts as base does. wm_similarity is the mean MiniLM cosine
#: of the tagged predictions with the real observations, a float32 sum over the samples: 1e-4 is 100 times the ~1e-6
#: in which the CPU kinds' embeddings agree.
PINNED_EVAL = {
    variant: {"success": 0.0, "invalid_action_rate": 50.0, "wm_hit_rate": 200 / 3, "wm_similarity": 0.3459526}
    for variant in ("base", "rwml")
}


def test_the_seeded_run_logs_the_recorded_reward_signal_and_loss_per_step(trained_run):
    logs = [m for m in read_jsonl(trained_run[0] / "metrics/rwml.jsonl") if "reward" in m]
    assert {key: [m[key] for m in logs] for key in PINNED} == {k: pytest.approx(v, abs=1e-6) for k, v in PINNED.items()}
    assert all(m["hit_rate"] == m["reward"] for m in logs)  # the binary reward is the hit at tau_d
    assert all({"tag_rate", "completions/clipped_ratio"} <= set(m) for m in logs)


def test_the_seeded_run_evaluates_to_the_recorded_success_and_world_model_hits(trained_run):
    measured = {}
    for variant in PINNED_EVAL:
        result = json.loads((trained_run[0] / f"eval/{variant}.json").read_text())
        measured[variant] = {key: result[key] for key in ("invalid_action_rate", "wm_hit_rate", "wm_similarity")}
        measured[variant]["success"] = result["success"]["all"]["mean"]
    assert measured == {
        variant: {key: pytest.approx(v, abs=1e-4 if key == "wm_similarity" else 1e-6) for key, v in pinned.items()}
        for variant, pinned in PINNED_EVAL.items()
    }


def test_every_artifact_of_the_run_folder_exists_and_parses(trained_run):
    run = trained_run[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert {s for s, e in manifest["stages"].items() if e["status"] == "done"} == set(
        Recipe.model_fields["stages"].default
    )
    episodes = read_jsonl(run / "rollouts.jsonl")
    assert len(episodes) == 6 and len({e["episode_id"] for e in episodes}) == 6
    train, val = read_jsonl(run / "wm/train.jsonl"), read_jsonl(run / "wm/val.jsonl")
    assert train and val and not {t["task_id"] for t in train} & {t["task_id"] for t in val}  # held-out games
    stats, kept = json.loads((run / "wm/filter.json").read_text()), read_jsonl(run / "wm/rwml.jsonl")
    assert stats["train_triplets"] == len(train) and stats["kept"] == len(kept)
    assert stats["easy_fraction"] == stats["easy"] / len(train)
    assert sum(not t["easy"] for t in kept) == len(train) - stats["easy"]  # every hard triplet is kept
    assert (run / "checkpoints/filter/adapter/adapter_model.safetensors").exists()
    for variant in ("base", "rwml"):
        result = json.loads((run / f"eval/{variant}.json").read_text())
        records = read_jsonl(run / f"eval/wm_{variant}.jsonl")
        rewards = [r for record in records for r in record["rewards"]]
        assert result["wm_score"] == pytest.approx(sum(rewards) / len(rewards)) and result["wm_triplets"] == len(val)
        assert all(
            r == (s is not None and 1 - s < 1.0) for rec in records for r, s in zip(rec["rewards"], rec["similarities"])
        )
        assert len(read_jsonl(run / f"eval/episodes_{variant}.jsonl")) == 2
        assert len(read_jsonl(run / f"eval/wm_{variant}.jsonl")) == len(val)
    report = (run / "report.md").read_text()
    assert "| base |" in report and "| rwml |" in report and "plots/rwml_reward.png" in report
    assert (run / "plots/rwml_reward.png").stat().st_size > 1000


def test_records_load_with_hugging_face_datasets(trained_run):
    from datasets import load_dataset

    run = trained_run[0]
    for name in (
        "rollouts.jsonl",
        "wm/train.jsonl",
        "wm/val.jsonl",
        "wm/rwml.jsonl",
        "eval/episodes_base.jsonl",
        "metrics/rwml.jsonl",
    ):
        rows = load_dataset("json", data_files=str(run / name), split="train")
        assert len(rows) == len(read_jsonl(run / name)) and "schema" in rows.column_names


def test_a_second_train_skips_every_stage(trained_run):
    run, _, _, first = trained_run
    again = rwml_lite("train", str(run.parent / "recipe.yaml"))
    assert again.returncode == 0, again.stderr[-2000:]
    for stage in ("collect", "build", "filter", "rwml", "eval"):
        assert f"= {stage}: already done, skipped" in again.stderr


def test_a_changed_recipe_is_refused_with_the_changed_field(trained_run):
    run = trained_run[0]
    result = rwml_lite("train", str(run.parent / "recipe.yaml"), "grpo.learning_rate=0.5")
    assert result.returncode == 2
    assert "grpo" in result.stderr and "--redo rwml" in result.stderr
    assert "Traceback" not in result.stderr


def test_training_shows_one_progress_line_per_trainer_not_trls_raw_metrics(trained_run):
    result = trained_run[3]
    console = result.stdout + result.stderr
    assert "{'loss'" not in console and "'rewards/" not in console  # the raw dicts went to metrics/*.jsonl only
    lines = [line for line in console.splitlines() if line.lstrip().startswith("rwml ")]
    assert lines and "2/2" in lines[-1] and "reward" in lines[-1] and "ETA" in lines[-1]
