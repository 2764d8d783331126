"""`rwml-lite study`: the six variants of the paper's Table 1 over one shared collect/build/filter,
each in its own resumable folder, gathered into study.md, study.json and a chart; a killed study
finishes on the rerun without repeating finished work."""

from __future__ import annotations

import json

import pytest
import yaml
from test_resume import kill_when, start

from conftest import REPO, episode_record, rwml_lite, tiny_recipe
from rwml_lite.config import load_recipe
from rwml_lite.pipeline import link_finished, stage_keys
from rwml_lite.records import atomic_write_json
from rwml_lite.runfolder import RunFolder
from rwml_lite.study import SPECS, variant_recipe

SIX = ["base", "wm_sft", "rwml", "policy", "wm_sft+policy", "rwml+policy"]
POLICY = {"tasks_per_step": 2, "group_size": 2, "max_steps": 2, "episode_max_steps": 3, "learning_rate": 0.01,
          "micro_batch_size": 4, "save_steps": 1, "invalid_action_penalty": 0.1}  # fmt: skip


def study_recipe(folder, model_dir):
    path = tiny_recipe(folder, model_dir, policy=POLICY, wm_sft={"epochs": 1, "batch_size": 4})
    data = yaml.safe_load(path.read_text())
    data["study"] = {"variants": SIX}
    marked = yaml.safe_dump(data).replace("seed: 0\n", "seed: 0  # [demo] a 2-layer model on 3 twc games\n")
    path.write_text(marked)  # the study lists the marked line
    return path


def test_variants_share_the_stages_whose_results_would_be_the_same(tmp_path):
    recipe = load_recipe(
        REPO / "recipes/demo_cpu.yaml",
        ["reward.judge_endpoint=http://localhost:8000/v1", "worldmodel.filter.enabled=true"],
    )
    recipes = {name: variant_recipe(recipe, name, tmp_path) for name in SPECS}
    keys = {name: stage_keys(r) for name, r in recipes.items()}
    assert len({k["filter"] for k in keys.values()}) == 2  # only the ablation without subsampling filters otherwise
    assert keys["rwml+policy"]["rwml"] == keys["rwml"]["rwml"]  # RWML + Policy RL starts from the RWML variant
    assert keys["wm_sft+policy"]["wm_sft"] == keys["wm_sft"]["wm_sft"]
    assert recipes["rwml+policy"].policy.start == "rwml" and recipes["policy"].policy.start == "base"
    assert {r.eval.policies[0] for r in recipes.values()} == {"base", "wm_sft", "rwml", "policy"}
    assert recipes["rwml_no_filter"].worldmodel.filter.enabled is False


@pytest.mark.slow
def test_study_runs_six_variants_and_resumes_after_a_kill(tmp_path, tiny_qwen3, java):
    recipe = study_recipe(tmp_path, tiny_qwen3)
    run = tmp_path / "run"
    kill_when(
        start(recipe, "study"),
        lambda: (run / "variants/rwml/checkpoints/rwml/checkpoint-1/trainer_state.json").exists(),
    )
    finished_before = {n: (run / f"variants/{n}/eval/{SPECS[n].evaluated}.json").stat().st_mtime_ns
                       for n in ("base", "wm_sft")}  # fmt: skip
    collected = (run / "rollouts.jsonl").stat().st_mtime_ns

    result = rwml_lite("study", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "rollouts.jsonl").stat().st_mtime_ns == collected  # collect ran once, in the study folder
    for name, mtime in finished_before.items():  # evaluated before the kill: not evaluated again
        assert (run / f"variants/{name}/eval/{SPECS[name].evaluated}.json").stat().st_mtime_ns == mtime
    assert "> rwml (resuming)" in result.stderr

    manifest = lambda name: json.loads((run / f"variants/{name}/manifest.json").read_text())["stages"]  # noqa: E731
    assert manifest("rwml+policy")["rwml"]["linked_from"] == str(run / "variants/rwml")
    assert manifest("wm_sft+policy")["wm_sft"]["linked_from"] == str(run / "variants/wm_sft")
    assert manifest("rwml")["collect"]["linked_from"] == str(run)
    assert (run / "variants/rwml+policy/checkpoints/rwml").is_symlink()

    study = json.loads((run / "study.json").read_text())
    assert [row["name"] for row in study["variants"]] == SIX  # in the table's order
    for row in study["variants"]:
        name = row["name"]
        assert list(row["columns"]) == ["test"]
        assert len(row["columns"]["test"]["per_run"]) == 1 and 0 <= row["wm_score"] <= 1
        evaluated = json.loads((run / f"variants/{name}/eval/{SPECS[name].evaluated}.json").read_text())
        assert row["columns"]["test"]["mean"] == pytest.approx(evaluated["success"]["test"]["mean"])
    table = (run / "study.md").read_text()
    for name in SIX:
        assert f"| {SPECS[name].label} |" in table
    assert "## Where this study leaves the paper" in table
    assert "- `recipe.yaml: seed: 0  # [demo] a 2-layer model on 3 twc games`" in table
    assert (run / "plots/study.png").stat().st_size > 1000

    changed = (str(recipe), "study.variants=[base]", "eval.max_steps=2")  # one variant's eval, made differently
    refused = rwml_lite("study", *changed)
    said = " ".join(refused.stderr.split())  # the console wraps its lines
    assert refused.returncode != 0 and "eval.max_steps: 3 -> 2" in said and "pass --redo eval" in said
    redone = rwml_lite("study", *changed, "--redo", "eval")
    assert redone.returncode == 0, redone.stderr[-3000:]
    assert [p.name for p in (run / "variants/base/superseded").glob("*/eval/*.json")] == ["base.json"]  # kept
    assert (run / "rollouts.jsonl").stat().st_mtime_ns == collected  # the shared stages stand


def test_a_linked_stage_is_dropped_when_its_source_no_longer_holds_it(tmp_path):
    recipe = variant_recipe(load_recipe(REPO / "recipes/demo_cpu.yaml"), "base", tmp_path)  # collect, build, eval
    source, target = RunFolder(tmp_path), RunFolder(tmp_path / "variants/base")
    source.rollouts.write_text('{"episode_id": "train-1#0"}\n')
    entry = {"status": "done", "key": stage_keys(recipe)["collect"], "config": {}, "summary": {}}
    atomic_write_json(source.manifest, {"schema": 1, "stages": {"collect": entry}})

    assert link_finished([source], target, recipe) == ["collect"]  # build has not run anywhere: linking stops
    assert target.rollouts.is_symlink() and target.rollouts.read_text() == source.rollouts.read_text()
    assert link_finished([source], target, recipe) == []  # already linked

    atomic_write_json(source.manifest, {"schema": 1, "stages": {"collect": {**entry, "key": "redone"}}})
    assert link_finished([source], target, recipe) == []
    assert not target.rollouts.is_symlink()  # gone, so that the variant collects itself
    assert "collect" not in json.loads(target.manifest.read_text())["stages"]


def test_the_alfworld_table_has_the_papers_columns_and_numbers_beside_ours(tmp_path):
    from rwml_lite.study import columns, write_study

    recipe = load_recipe(REPO / "recipes/study_alfworld_qwen2.5_7b.yaml", [f"run.dir={tmp_path}", "eval.runs=2"])

    def episodes(seen_wins: list[int], unseen_wins: list[int]) -> list[dict]:
        """4 games per split; run r wins the first seen_wins[r] / unseen_wins[r] of them"""
        return [episode_record(f"{split}-{g}#{r}", [], split=split, rollout=r, won=g < wins[r], task_type="pick")
                for split, wins in (("valid_seen", seen_wins), ("valid_unseen", unseen_wins))
                for r in range(2) for g in range(4)]  # fmt: skip

    table = columns(recipe, episodes([2, 4], [1, 1]))
    assert list(table) == ["ID", "OOD", "AVG"]
    assert table["ID"]["per_run"] == [50.0, 100.0] and table["OOD"]["per_run"] == [25.0, 25.0]
    assert table["AVG"]["per_run"] == pytest.approx([2 / 3 * 50 + 1 / 3 * 25, 2 / 3 * 100 + 1 / 3 * 25])
    assert table["ID"]["run_mean"] == 75.0 and table["ID"]["run_std"] == pytest.approx(35.355, abs=1e-3)
    # over games: ID games won 2/2, 2/2, 1/2, 1/2 runs (0.75 over 4 games, Wilson [30.1, 95.4]); OOD 1/4 (Wilson
    # [4.6, 69.9]); AVG 2/3 ID + 1/3 OOD, sd sqrt(4/9 * .75 * .25 / 4 + 1/9 * .25 * .75 / 4) = 0.1614
    assert (table["ID"]["mean"], table["ID"]["low"], table["ID"]["high"]) == pytest.approx((75.0, 30.1, 95.4), abs=0.1)
    assert (table["OOD"]["mean"], table["OOD"]["low"], table["OOD"]["high"]) == pytest.approx((25, 4.6, 69.9), abs=0.1)
    avg = table["AVG"]
    assert (avg["mean"], avg["low"], avg["high"]) == pytest.approx((58.33, 58.33 - 31.63, 58.33 + 31.63), abs=0.05)

    row = {"folder": str(tmp_path / "variants/x"), "wm_hits": {"mean": 10.0, "low": 2.0, "high": 18.0, "units": 3},
           "wm_similarity": 0.5, "invalid_action_rate": 5.0}  # fmt: skip
    results = {"rwml+policy": {**row, "columns": table}, "rwml_no_filter": {**row, "columns": table}}
    write_study(recipe, RunFolder(tmp_path), results)
    lines = (tmp_path / "study.md").read_text().splitlines()
    header = (
        "| variant | success % ID | success % OOD | success % AVG | world-model hits % | similarity | invalid actions % "
        "| paper ID | paper OOD | paper AVG (~2/3 ID + 1/3 OOD) |"
    )
    assert header in lines
    ours = "75.0 [30.1, 95.4] | 25.0 [4.6, 69.9] | 58.3 [26.7, 90.0] | 10.0 [2.0, 18.0] | 0.5 | 5.0"
    assert f"| RWML + Policy RL | {ours} | 86.7 | 90.1 | 87.9 |" in lines
    assert f"| RWML without too-easy subsampling | {ours} | - | - | 2.9 |" in lines
    assert (tmp_path / "plots/study.png").stat().st_size > 1000
