"""Run folders as kills, editors and other programs leave them: a torn last line is skipped and then cut, a
broken line before the last and a manifest of another shape are refused naming the file, line or field; the
progress of a resumed collect counts its own episodes; progress written to a log is whole plain lines."""

from __future__ import annotations

import io
import json
import re

import pytest

from conftest import ScriptedGenerator, episode_record, triplet_record
from rwml_lite.config import AgentSettings, TextWorldExpressSettings
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.progress import console_progress
from rwml_lite.records import JsonlAppender, read_jsonl
from rwml_lite.rollout import Play, episode_specs, run_episodes
from rwml_lite.runfolder import RunFolder, read_manifest
from rwml_lite.schemas import append_episode, read_episodes, read_triplets, write_triplets

#: A kill mid-write leaves a line without its newline; an editor saving the file (or `echo >>`) then adds one.
TORN_TAILS = ['{"episode_id": "t#9", "ste', '{"episode_id": "t#9", "ste\n']


@pytest.fixture(autouse=True)
def _no_forced_terminal(monkeypatch):
    """rich takes FORCE_COLOR or TTY_COMPATIBLE=1 to mean a terminal whatever the stream: these tests need a log."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


def _rollouts(path, episode_ids):
    with JsonlAppender(path) as out:
        for episode_id in episode_ids:
            append_episode(out, episode_record(episode_id, [{"action": "look"}]))


@pytest.mark.parametrize("tail", TORN_TAILS, ids=["no newline", "newline added"])
def test_a_torn_last_line_is_skipped_by_the_readers_and_cut_by_the_next_append(tmp_path, tail):
    rollouts, triplets = tmp_path / "rollouts.jsonl", tmp_path / "train.jsonl"
    _rollouts(rollouts, ["train-0#0", "train-1#0"])
    write_triplets(triplets, [triplet_record("train-0#0/0"), triplet_record("train-1#0/0")])
    for path in (rollouts, triplets):
        with open(path, "a") as f:
            f.write(tail)
    assert [ep.episode_id for ep in read_episodes(rollouts)] == ["train-0#0", "train-1#0"]
    assert [t.triplet_id for t in read_triplets(triplets)] == ["train-0#0/0", "train-1#0/0"]
    # eval's (and collect's) reader: every episode is on disk, so it plays none and needs no environment
    specs = episode_specs(["train-0", "train-1"], "train", 1, seed=0)
    idle = ScriptedGenerator(lambda prompt, i: "never asked")
    played = run_episodes(
        rollouts, specs, Play(TextWorldExpressSettings(), idle, Sampling(), AgentSettings(), 3, "eval")
    )
    assert [ep.episode_id for ep in played] == ["train-0#0", "train-1#0"] and idle.calls == 0

    _rollouts(rollouts, ["train-2#0"])  # the next append cuts the torn line away
    assert [r["episode_id"] for r in read_jsonl(rollouts)] == ["train-0#0", "train-1#0", "train-2#0"]
    assert '"t#9"' not in rollouts.read_text()


def test_a_broken_line_before_the_last_is_refused_naming_the_file_and_line(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    _rollouts(path, ["train-0#0"])
    with open(path, "a") as f:  # something wrote after a torn line without cutting it: no kill leaves this
        f.write(TORN_TAILS[1] + json.dumps(episode_record("train-1#0", []).line()) + "\n")
    with pytest.raises(RwmlError, match=r"rollouts.jsonl, line 2: not valid JSON \(.*column.*--redo STAGE"):
        read_episodes(path)


def test_a_manifest_of_another_shape_is_refused_naming_the_field(tmp_path):
    folder = RunFolder(tmp_path)
    written = {  # as pipeline.run and link_finished write it
        "schema": 1,
        "stages": {
            "collect": {"key": "k1", "config": {"seed": 0}, "status": "done", "started": "2025-01-01T00:00:00+00:00",
                        "finished": "2025-01-01T00:01:00+00:00", "seconds": 60.0, "summary": {"episodes": 4},
                        "linked_from": "runs/other"},
            "build": {"key": "k2", "config": {}, "status": "running", "started": "2025-01-01T00:01:00+00:00"},
        },
    }  # fmt: skip
    folder.manifest.write_text(json.dumps(written))
    assert read_manifest(folder) == written
    for shape, field in [
        ({"schema": 1, "stages": 7}, "`stages`: Input should be an object"),
        (
            {"schema": 1, "stages": {"collect": {**written["stages"]["collect"], "summary": None}}},
            "`stages.collect.done.summary`",
        ),
        ({"schema": 1, "stages": {"build": {"key": "k2", "config": {}, "status": "paused"}}}, "`stages.build`: .*tag"),
    ]:
        folder.manifest.write_text(json.dumps(shape))
        with pytest.raises(RwmlError, match=rf"manifest.json: {field}.*Move it away.*run.dir=runs/NEW"):
            read_manifest(folder)


def test_a_resumed_collect_counts_only_its_own_episodes(tmp_path, java):
    """A run folder holding episodes of other specs (another recipe's tasks) besides one of this run's."""
    path = tmp_path / "rollouts.jsonl"
    _rollouts(path, ["train-7#0", "train-0#0", "train-8#0", "train-9#0"])
    log = io.StringIO()
    settings = TextWorldExpressSettings(
        game="twc", game_params="numLocations=1,numItemsToPutAway=1,includeDoors=0,limitInventorySize=0"
    )
    specs = episode_specs(["train-0", "train-1"], "train", 1, seed=0)
    with console_progress(stream=log) as progress:
        played = run_episodes(path, specs, Play(settings, ScriptedGenerator(lambda prompt, i: "<action>look around</action>"), Sampling(), AgentSettings(), 2, "collect"), progress=progress)  # fmt: skip
    assert [ep.episode_id for ep in played] == ["train-0#0", "train-1#0"]
    counts = re.findall(r"^collect (\d+)/(\d+) ", log.getvalue(), re.MULTILINE)
    assert counts[0] == ("1", "2") and counts[-1] == ("2", "2")  # was 4/2, then 5/2


def test_progress_in_a_log_is_whole_plain_lines_first_and_last(tmp_path):
    log = io.StringIO()
    numbers = "success 61.9% reward 0.412 invalid 3% (last 10) 95 s/step"
    with console_progress(stream=log) as progress:
        task = progress.add_task("[bold]policy[/bold]", total=300, completed=100, info="")
        for step in range(101, 111):  # quicker than progress.PLAIN_INTERVAL: no line between the first and last
            progress.update(task, completed=step, info=numbers)
    first, last = log.getvalue().splitlines()
    assert re.fullmatch(r"policy 100/300 0:00:00 ETA -:--:--", first)
    assert re.fullmatch(rf"policy 110/300 0:00:00 ETA \d+:\d\d:\d\d {re.escape(numbers)}", last) and len(last) > 80


def test_a_trainers_progress_in_a_log_is_whole_plain_lines(capsys):
    from transformers import TrainerState

    from rwml_lite.train.common import ConsoleProgress

    callback, state = ConsoleProgress("rwml"), TrainerState(max_steps=12, global_step=4)
    callback.on_train_begin(None, state, None)
    state.global_step = 5
    callback.on_step_end(None, state, None)
    callback.on_log(None, state, None, logs={"loss": 0.0123, "reward": 0.5, "signal_share": 0.75, "step_time": 41.2})
    callback.on_train_end(None, state, None)
    first, last = capsys.readouterr().err.splitlines()
    assert first == "rwml 4/12 0:00:00 ETA -:--:--"
    assert re.fullmatch(r"rwml 5/12 0:00:0\d ETA \d+:\d\d:\d\d loss 0.0123 reward 0.5 signal 0.75 s/step 41.2", last)
