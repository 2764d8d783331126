"""RWML's signal diagnostics: GRPO learns only from groups whose rewards differ, so every step logs the share of
such groups, and a run whose share stays low is warned once, naming the fields that would change it. Real TRL
GRPO steps on the tiny Qwen3, with rewards scripted to be constant or to alternate within each group."""

from __future__ import annotations

import pytest

from conftest import tiny_recipe, triplet_record
from rwml_lite.config import load_recipe
from rwml_lite.records import read_jsonl
from rwml_lite.runfolder import RunFolder
from rwml_lite.train.grpo import signal_summary, train_rwml

GRPO = {"group_size": 4, "batch_size": 2, "micro_batch_size": 8, "max_steps": 3, "learning_rate": 0.01,
        "max_completion_length": 8, "save_steps": 10, "signal_window": 2, "min_signal_share": 0.5}  # fmt: skip


def triplets():
    return [
        triplet_record(f"game{i}#0/0", prompt=[{"role": "user", "content": f"Where is the coin? {i}"}])
        for i in range(6)
    ]


def constant(prompts, completions, **kwargs):
    return [0.0] * len(completions)


def alternating(prompts, completions, **kwargs):
    """1, 0, 1, 0 within each group of four: every group sees a hit and a miss."""
    return [float(i % 2 == 0) for i in range(len(completions))]


@pytest.mark.parametrize(("reward", "share", "warned"), [(constant, 0.0, True), (alternating, 1.0, False)])
def test_each_step_logs_its_signal_share_and_a_lasting_lack_of_signal_is_warned_once(
    tmp_path, tiny_qwen3, capsys, reward, share, warned
):
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_qwen3, grpo=GRPO))
    folder = RunFolder(tmp_path / "run")
    train_rwml(recipe, triplets(), reward, folder)

    logs = read_jsonl(folder.metrics("rwml"))
    steps = [m for m in logs if "reward" in m]
    assert [m["signal_share"] for m in steps] == [share] * 3
    warnings = [m for m in logs if "signal_warning" in m]
    console = capsys.readouterr().err
    if warned:  # below 0.5 over the 2-step window from step 2 on: one warning, at step 2
        assert [m["step"] for m in warnings] == [2]
        assert "only 0 % of GRPO's groups saw rewards that differ" in warnings[0]["signal_warning"]
        assert "reward.tau_d" in warnings[0]["signal_warning"]  # no hit_rate logged by a scripted reward: the fields
        assert console.count("GRPO's groups saw rewards that differ") == 1
        assert signal_summary(logs)["warning"] == warnings[0]["signal_warning"]
    else:
        assert warnings == [] and "GRPO's groups saw" not in console
        assert "warning" not in signal_summary(logs)


@pytest.mark.parametrize(
    ("rates", "names"),
    [
        ({"hit_rate": 0.0, "tag_rate": 1.0}, "reward.tau_d is strict"),
        ({"hit_rate": 0.95, "tag_rate": 1.0}, "reward.tau_d is loose"),
        ({"hit_rate": 0.5, "tag_rate": 1.0}, "the too-easy filter (worldmodel.filter)"),  # groups all hit or all miss
        ({"hit_rate": 0.0, "tag_rate": 0.1, "completions/clipped_ratio": 0.9}, "raise grpo.max_completion_length"),
    ],
)
def test_the_warning_names_the_field_the_rates_point_at(rates, names):
    from rwml_lite.config import GrpoSettings
    from rwml_lite.train.grpo import signal_warning

    window = [{"signal_share": 0.0, **rates}] * 5
    assert names in signal_warning(window, GrpoSettings())


def test_grpo_resumed_in_a_later_epoch_draws_that_epochs_order_as_an_uninterrupted_run_did():
    """TRL's sampler shuffles each epoch from one generator seeded once; a resumed run builds a new sampler, and
    transformers then calls set_epoch(e): the epoch's order must be the one the uninterrupted run drew."""
    from trl.trainer.utils import RepeatSampler

    from rwml_lite.train.grpo import EpochSeededSampler

    uninterrupted = RepeatSampler(range(12), mini_repeat_count=2, batch_size=3, seed=7)
    orders = [list(uninterrupted) for _ in range(3)]
    assert orders[0] != orders[2]  # each epoch its own shuffle
    ours = EpochSeededSampler.of(RepeatSampler(range(12), mini_repeat_count=2, batch_size=3, seed=7))
    assert [ours.set_epoch(e) or list(ours) for e in range(3)] == orders  # uninterrupted: TRL's orders
    resumed = EpochSeededSampler.of(RepeatSampler(range(12), mini_repeat_count=2, batch_size=3, seed=7))
    resumed.set_epoch(2)
    assert list(resumed) == orders[2]
    assert list(RepeatSampler(range(12), mini_repeat_count=2, batch_size=3, seed=7)) != orders[2]  # TRL's own: epoch 0
