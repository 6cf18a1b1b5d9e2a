"""Offline replay of real rosbag2 files (written by bagtools) through the shared Engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED_DATA
from llava4d_ros.config import NodeConfig
from llava4d_ros.data import bagtools
from llava4d_ros.data.scene import make_scene
from llava4d_ros.engine import Engine
from llava4d_ros.replay import feed_bag, main

KITCHEN = SHARED_DATA / "7scenes-redkitchen"


@pytest.fixture(scope="module")
def scene():
    return make_scene(5, n_moving=1, duration_s=6.0)


@pytest.fixture(scope="module")
def scene_bag(tmp_path_factory, scene):
    path = tmp_path_factory.mktemp("bags") / "scene5"
    bagtools.write_scene_bag(path, scene)
    return path


def test_synthetic_bag_gives_every_object_one_id(scene, scene_bag):
    """Each object of the scene, still or moving, is one map object named by its measured
    colour; the mover's history follows its true path."""
    engine = Engine(NodeConfig())
    summary = feed_bag(engine, scene_bag)
    n_frames = len(scene.frame_times_s)
    assert summary.outcomes.get("keyframe", 0) + summary.outcomes.get("skipped", 0) == n_frames
    objects = engine.objects(include_gone=True)
    assert sorted(o.colour for o in objects) == sorted(o.colour for o in scene.objects), (
        [(o.object_id, o.label, o.center) for o in objects])
    (mover,) = [o for o in scene.objects if o.is_dynamic]
    track = next(o for o in objects if o.colour == mover.colour)
    assert track.first_seen_s - bagtools.DEFAULT_EPOCH_S < 1.0
    errors = [np.linalg.norm(np.asarray(p) - mover.center_at(t - bagtools.DEFAULT_EPOCH_S))
              for t, p in track.history]
    # centres of the seen surface while it moves: biased toward the camera by up to half its
    # depth (0.1-0.25 m here)
    assert np.median(errors) < 0.25, errors


def test_sqlite3_bag_replays_the_same_as_mcap(tmp_path, scene):
    path = tmp_path / "scene5_sqlite"
    bagtools.write_scene_bag(path, scene, storage="sqlite3")
    engine = Engine(NodeConfig())
    summary = feed_bag(engine, path)
    assert summary.outcomes.get("keyframe", 0) >= 10
    assert not [k for k in summary.outcomes if k.startswith("dropped")]


def test_missing_topics_are_named(scene_bag):
    with pytest.raises(ValueError, match="/nope"):
        feed_bag(Engine(NodeConfig()), scene_bag, {"rgb": "/nope"})


@pytest.mark.skipif(not KITCHEN.exists(), reason=f"{KITCHEN} not present")
def test_7scenes_bag_static_kitchen_gives_still_objects(tmp_path):
    """Real Kinect depth, estimated poses, nothing moves: every frame is ingested, the bag's
    map is z-up (the folder's gravity), the object map holds still objects standing on the
    floor and the table, and none of them moves."""
    path = tmp_path / "kitchen"
    bagtools.write_folder_bag(path, KITCHEN, stop=150)  # 10 s at 15 Hz
    engine = Engine(NodeConfig())
    summary = feed_bag(engine, path)
    ingested = summary.outcomes.get("keyframe", 0) + summary.outcomes.get("skipped", 0)
    assert ingested == 150, summary.outcomes
    objects = engine.objects(include_gone=True)
    assert len(objects) >= 3 and not any(o.is_dynamic for o in objects)
    assert {"floor", "table"} <= {o.support for o in objects}


@pytest.mark.shipped_weights
@pytest.mark.skipif(not KITCHEN.exists(), reason=f"{KITCHEN} not present")
def test_7scenes_bag_answers_stand_on_the_objects_it_holds(tmp_path):
    """A real rosbag2 of the kitchen's frames 0-299 through the replay CLI and the shipped
    default: answers about the room come from its object map, every object an answer names
    is one of them, nothing moves, an absent kettle is declined naming what is there."""
    path, out = tmp_path / "kitchen", tmp_path / "out"
    bagtools.write_folder_bag(path, KITCHEN, stop=300)
    questions = ["What do you see?", "Is anything moving right now?", "How many chairs are there?",
                 "Where is the kettle?", "Where is the white mug?",
                 "Where was the camera 2 seconds ago?"]
    assert main([str(path), "--out", str(out), *(a for q in questions for a in ("-q", q))]) == 0
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    objects = {json.loads(line)["id"] for line in (out / "tracks.jsonl").read_text().splitlines()}
    assert [a["question"] for a in answers] == questions
    assert answers[0]["text"].startswith("I see ") and answers[0]["objects"]
    for a in answers:
        assert {o["track_id"] for o in a["objects"]} <= objects, a
    assert answers[1]["text"] == "No, nothing is moving now."
    assert answers[3]["text"].startswith("I see no kettle; I see ")
    assert answers[5]["text"].startswith("2 s ago the camera was at [")


def test_cli_writes_tracks_and_plot_without_a_model(tmp_path, scene_bag, capsys):
    out = tmp_path / "out"
    assert main([str(scene_bag), "--no-model", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert {o["colour"] for o in lines} >= {"orange"} and all(o["id"] >= 1 for o in lines)
    png = (out / "tracks.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "replayed" in capsys.readouterr().out


def test_cli_refuses_a_missing_bag(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_streamed_answer_is_typed_as_it_grows():
    import io

    from llava4d_ros.replay import Typewriter

    out = io.StringIO()
    typed = Typewriter(out=out)
    for text in ("At 1.0s,", "At 1.0s, the red cube", "At 1.0s, the red cube moves.",
                 "At 1.0s, the red cube moves. At 1.0s,"):
        typed(text)
    typed.finish("At 1.0s, the red cube moves.")  # the repeat was taken back
    assert out.getvalue() == ("A: At 1.0s, the red cube moves. At 1.0s,\n"
                              "A: At 1.0s, the red cube moves.\n")


def test_cli_streams_the_answers_it_writes(tmp_path, scene_bag, capsys):
    out = tmp_path / "out"
    assert main([str(scene_bag), "--stream", "-q", "Describe the scene.", "-q", "",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert answers[0]["text"] and "error" in answers[1]
    assert f"Q: Describe the scene.\nA: {answers[0]['text']}\n" in printed
    assert "Q: \n   refused: empty question" in printed
