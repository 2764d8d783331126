"""Records survive kills: a torn last line is cut, whole-file writes are atomic."""

from __future__ import annotations

import json

from rwml_lite.records import JsonlAppender, atomic_write_json, read_jsonl


def test_appender_cuts_a_torn_tail_and_keeps_complete_records(tmp_path):
    path = tmp_path / "r.jsonl"
    with JsonlAppender(path) as out:
        out.append({"episode_id": "a"})
        out.append({"episode_id": "b"})
    with open(path, "a") as f:
        f.write('{"episode_id": "c", "ste')  # a kill in the middle of a write
    assert [r["episode_id"] for r in read_jsonl(path)] == ["a", "b"]
    with JsonlAppender(path) as out:
        out.append({"episode_id": "c"})
    assert [r["episode_id"] for r in read_jsonl(path)] == ["a", "b", "c"]
    assert all(r["schema"] == 1 for r in read_jsonl(path))


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"v": 1})
    atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_episodes_round_trip_through_their_model_and_a_record_of_another_shape_is_a_clear_error(tmp_path):
    import pytest

    from conftest import episode_record
    from rwml_lite.errors import RwmlError
    from rwml_lite.schemas import append_episode, read_episodes

    path = tmp_path / "rollouts.jsonl"
    episode = episode_record("t#0", [{"action": "look", "valid": True}, {"valid": False}], won=True)
    with JsonlAppender(path) as out:
        append_episode(out, episode)
    [line] = read_jsonl(path)
    assert line["schema"] == 1 and line["num_steps"] == 2 and line["num_invalid"] == 1  # readable without us too
    assert read_episodes(path) == [episode]
    with open(path, "a") as f:
        f.write(json.dumps({**line, "steps": [{"observation": "x"}]}) + "\n")  # a step without its fields
    with pytest.raises(RwmlError, match=r"rollouts.jsonl, line 2: `steps.0.completion`: Field required.*--redo"):
        read_episodes(path)
