"""The Engine (sync + TF + ingest + questions) without ROS: what the node and replay share."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from helpers.scene_feed import (
    EPOCH_S,
    OPTICAL,
    feed_frame,
    feed_scene,
    pose_tf,
    stamp_ns,
    static_tf,
)
from llava4d_ros.config import NodeConfig
from llava4d_ros.data.scene import frames, make_scene
from llava4d_ros.engine import Engine, InputRefused, QueryError


@pytest.fixture(scope="module")
def scene():
    return make_scene(3, duration_s=4.0)


@pytest.fixture(scope="module")
def scene_frames(scene):
    return list(frames(scene))


def test_every_frame_with_tf_is_ingested(scene, scene_frames):
    engine = Engine(NodeConfig())
    outcomes = feed_scene(engine, scene)
    assert engine.stats.ingested == len(scene_frames)
    assert not engine.stats.drops
    assert engine.stats.keyframes >= scene.duration_s / NodeConfig().keyframe_max_interval_s - 1
    t0, t1 = engine.window()
    assert t0 == pytest.approx(EPOCH_S, abs=1e-3)
    assert t1 == pytest.approx(EPOCH_S + scene_frames[-1].stamp_s, abs=1e-3)
    assert all(o.status != "dropped" for o in outcomes)


def test_tf_arriving_late_is_waited_for(scene, scene_frames):
    """Images first, TF a few frames later (within tf_timeout_s): nothing is lost."""
    engine = Engine(NodeConfig(tf_timeout_s=0.5))
    static_tf(engine)
    lag = 2  # frames at 10 fps: 0.2 s < 0.5 s
    for i, f in enumerate(scene_frames):
        feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s), with_tf=False)
        if i >= lag:
            g = scene_frames[i - lag]
            pose_tf(engine, g, stamp_ns(g.stamp_s))
            engine.process_pending()
    assert engine.stats.ingested == len(scene_frames) - lag
    assert not engine.stats.drops


def test_missing_tf_drops_with_a_reason_and_keeps_going(scene, scene_frames):
    engine = Engine(NodeConfig(tf_timeout_s=0.2))
    static_tf(engine)
    for f in scene_frames[:10]:
        feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s), with_tf=False)
    assert engine.stats.ingested == 0
    assert engine.stats.drops["no TF"] >= 5
    # TF appears: later frames are ingested
    for f in scene_frames[10:20]:
        feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s))
    assert engine.stats.ingested == 10


def test_time_backwards_resets_and_small_steps_back_are_dropped(scene, scene_frames):
    engine = Engine(NodeConfig())
    feed_scene(engine, scene)
    n_before = engine.stats.ingested
    # one frame slightly in the past: dropped, not a reset
    f = scene_frames[-1]
    feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s - 0.05))
    assert engine.stats.resets == 0
    assert engine.stats.ingested == n_before
    # the bag loops: time jumps back by the whole duration -> reset, window starts over
    static_tf(engine)
    feed_frame(engine, scene_frames[0], scene.cam, stamp_ns(scene_frames[0].stamp_s))
    assert engine.stats.resets == 1
    t0, t1 = engine.window()
    assert t0 == t1 == pytest.approx(EPOCH_S, abs=1e-3)


@pytest.mark.parametrize("bad_depth,reason", [
    (lambda d: d[:-10], "shape mismatch"),  # rgb and depth of different sizes
    (lambda d: np.full_like(d, np.nan), "no valid depth"),
])
def test_unusable_depth_drops_the_frame_with_its_reason(scene, scene_frames, bad_depth, reason):
    engine = Engine(NodeConfig())
    static_tf(engine)
    f = scene_frames[0]
    t = stamp_ns(f.stamp_s)
    pose_tf(engine, f, t)
    engine.add_image("info", t, scene.cam)
    engine.add_image("depth", t, bad_depth(f.depth_m))
    out = engine.add_image("rgb", t, (OPTICAL, f.rgb))
    assert [o.status for o in out] == ["dropped"]
    assert engine.stats.ingested == 0 and dict(engine.stats.drops) == {reason: 1}


def test_questions_are_validated_before_the_model(scene):
    engine = Engine(NodeConfig(max_question_chars=50))
    with pytest.raises(QueryError, match="empty"):
        engine.ask("   ")
    with pytest.raises(QueryError, match="limit"):
        engine.ask("x" * 51)
    with pytest.raises(QueryError, match="no model"):
        engine.ask("Which objects move?")


def test_cloud_marks_dynamic_points(scene):
    engine = Engine(NodeConfig())
    feed_scene(engine, scene)
    xyz, dyn = engine.cloud()
    assert xyz.shape[1] == 3 and len(xyz) == len(dyn) > 1000
    assert np.isfinite(xyz).all()
    if any(o.is_dynamic for o in scene.objects):
        assert dyn.any()
    assert not dyn.all()


def test_frames_without_camera_info_never_ingest_and_are_counted(scene, scene_frames):
    engine = Engine(NodeConfig(sync_queue_size=3))
    static_tf(engine)
    for f in scene_frames[:10]:
        t = stamp_ns(f.stamp_s)
        pose_tf(engine, f, t)
        engine.add_image("depth", t, f.depth_m)
        engine.add_image("rgb", t, (OPTICAL, f.rgb))
    assert engine.stats.ingested == 0
    assert sum(v for k, v in engine.drops().items() if k.startswith("sync: ")) >= 5


def test_tf_only_in_the_future_drops_the_frame(scene, scene_frames):
    engine = Engine(NodeConfig())
    static_tf(engine)
    late = scene_frames[20]
    pose_tf(engine, late, stamp_ns(late.stamp_s))
    pose_tf(engine, scene_frames[21], stamp_ns(scene_frames[21].stamp_s))
    f = scene_frames[0]  # 2 s before the oldest transform: TF can never answer for it
    t = stamp_ns(f.stamp_s)
    engine.add_image("info", t, scene.cam)
    engine.add_image("depth", t, f.depth_m)
    out = engine.add_image("rgb", t, (OPTICAL, f.rgb))
    assert [o.status for o in out] == ["dropped"] and "no TF" in out[0].reason
    assert engine.stats.drops["no TF"] == 1


# ----------------------------------------------------------- the node's threaded mode
class IngestThread:
    """The node's ingest loop, as a context manager."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.engine.process_pending(yield_to_queries=True)
            self.engine.wait_for_work(0.05)

    def __enter__(self) -> IngestThread:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.engine.wake()
        self.thread.join(timeout=10)


def wait_until(cond, timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_threaded_ingest_takes_every_frame_in_stamp_order(scene, scene_frames):
    """Callbacks only queue (ingest=False); the ingest thread drains: nothing lost, in order."""
    engine = Engine(NodeConfig(ingest_queue_size=4))
    static_tf(engine)
    with IngestThread(engine):
        for f in scene_frames:
            assert engine.wait_for_room(10.0)
            feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s), ingest=False)
        assert wait_until(lambda: engine.stats.ingested == len(scene_frames)), engine.stats
    assert not engine.drops() and engine.pending() == 0
    t0, t1 = engine.window()
    assert (t0, t1) == pytest.approx((EPOCH_S, EPOCH_S + scene_frames[-1].stamp_s), abs=1e-3)


def test_a_full_queue_pushes_back_then_drops_the_oldest_frame(scene, scene_frames):
    engine = Engine(NodeConfig(ingest_queue_size=3))
    static_tf(engine)
    out = []
    for f in scene_frames[:5]:  # nobody ingests
        out += feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s), ingest=False)
    assert engine.pending() == 3
    assert [o.status for o in out] == ["dropped", "dropped"]
    assert engine.drops() == {"ingest backlog": 2}
    assert not engine.wait_for_room(0.05)  # full: a callback would wait here
    engine.process_pending()
    assert engine.wait_for_room(0.0)
    assert engine.stats.ingested == 3
    # the two oldest were dropped, not the newest
    assert engine.window()[0] == pytest.approx(EPOCH_S + scene_frames[2].stamp_s, abs=1e-3)


class BlockingModel:
    """The tiny real model, whose answers wait for `release` (to hold a question open)."""

    def __init__(self, model):
        self._model = model
        self.started = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def answer(self, *args, **kwargs):
        self.started.set()
        assert self.release.wait(20)
        return self._model.answer(*args, **kwargs)


def test_ingest_yields_to_a_question_until_the_queue_is_half_full(scene, scene_frames,
                                                                   tmp_path):
    from helpers.tiny_model import save_tiny_model
    from llava4d_ros.model.runtime import load_model

    model = BlockingModel(load_model(str(save_tiny_model(tmp_path / "tiny")), "cpu"))
    engine = Engine(NodeConfig(ingest_queue_size=8), model)  # the grid from the model's spec
    static_tf(engine)
    for f in scene_frames[:5]:
        feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s))
    assert engine.stats.ingested == 5
    with IngestThread(engine):
        asker = threading.Thread(target=engine.ask,
                                 args=("When did the red cube start moving?",))
        asker.start()
        assert model.started.wait(20)
        for f in scene_frames[5:8]:  # 3 < half of 8: they wait for the answer
            feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s), ingest=False)
        time.sleep(0.5)
        assert engine.stats.ingested == 5 and engine.pending() == 3
        for f in scene_frames[8:11]:  # at half full, ingest keeps the queue there
            feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s), ingest=False)
        assert wait_until(lambda: engine.stats.ingested == 8)
        time.sleep(0.3)
        assert engine.stats.ingested == 8 and engine.pending() == 3
        assert asker.is_alive()  # the question is still open
        model.release.set()
        asker.join(20)
        assert wait_until(lambda: engine.stats.ingested == 11)
    assert not engine.drops()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from helpers.tiny_model import save_tiny_model
    from llava4d_ros.model.runtime import load_model

    return load_model(str(save_tiny_model(tmp_path_factory.mktemp("tiny"))), "cpu")


@pytest.fixture(scope="module")
def fed_engine(tiny_model, scene):
    engine = _tiny_engine(tiny_model)
    feed_scene(engine, scene)
    return engine


def _tiny_engine(model, **cfg) -> Engine:
    """An engine on the tiny untrained model; short answers (their text is noise anyway)."""
    cfg.setdefault("max_new_tokens", 4)
    return Engine(NodeConfig(**cfg), model)


def test_ingest_settings_come_from_the_model_spec(tiny_model):
    spec = tiny_model.spec
    engine = Engine(NodeConfig())
    assert engine.ingestor.cfg.token_budget == 2560 != spec.token_budget  # so this can fail
    engine.set_model(tiny_model)
    ing = engine.ingestor.cfg
    assert (ing.patch_grid, ing.voxel_m, ing.token_budget) == (
        spec.patch_grid, spec.voxel_m, spec.token_budget)
    # a node parameter equal to the model's is accepted
    same = NodeConfig(patch_rows=spec.patch_grid[0], token_budget=spec.token_budget)
    assert Engine(same, tiny_model).ingestor.cfg == ing


@pytest.mark.parametrize("param, value, match", [
    ("patch_cols", 7, r"patch_cols = 7 conflicts .* patch_cols = 32"),
    ("voxel_m", 0.35, r"voxel_m = 0.35 conflicts .* voxel_m = 0.2"),
    ("token_budget", 99, r"token_budget = 99 conflicts .* token_budget = 256"),
])
def test_a_node_parameter_conflicting_with_the_model_spec_is_refused(tiny_model, param, value,
                                                                      match):
    with pytest.raises(ValueError, match=match):
        Engine(NodeConfig(**{param: value}), tiny_model)
    engine = Engine(NodeConfig(**{param: value}))  # no model yet: the node's value is used
    before = engine.ingestor
    with pytest.raises(ValueError, match=match):
        engine.set_model(tiny_model)
    assert engine.model is None and engine.ingestor is before  # nothing changed


def test_tf_far_from_data_time_is_refused_and_never_resets(scene, scene_frames):
    engine = Engine(NodeConfig())
    feed_scene(engine, scene)
    n, window = engine.stats.ingested, engine.window()
    last = stamp_ns(scene_frames[-1].stamp_s)
    q = (0.0, 0.0, 0.0, 1.0)
    for t_ns in (0, (2**31 - 1) * 10**9):  # a stamp of 0, the int32 maximum
        with pytest.raises(InputRefused, match="map -> camera_link.*tf_cache_s"):
            engine.add_transform("map", "camera_link", t_ns, (0, 0, 0), q, False)
    # an unrelated edge going 5 s back: taken (inside the TF cache), resets nothing
    engine.add_transform("odom", "wheel_link", last, (0, 0, 0), q, False)
    engine.add_transform("odom", "wheel_link", last - 5 * 10**9, (0, 0, 0), q, False)
    assert engine.stats.refused == {"tf far from data time": 2}
    assert engine.stats.resets == 0 and engine.window() == window
    f = scene_frames[-1]  # and the next frame goes in as usual
    feed_frame(engine, f, scene.cam, last + 10**8)
    assert engine.stats.ingested == n + 1


def test_tf_far_from_the_first_image_is_forgotten(scene, scene_frames):
    """Before any image there is no data time to compare with: a stamp of int32 max taken
    then is dropped once the first image sets data time (it would block the edge's cache)."""
    engine = Engine(NodeConfig())
    static_tf(engine)
    pose_tf(engine, scene_frames[0], (2**31 - 1) * 10**9)
    for f in scene_frames[:5]:
        feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s))
    # the first frame's TF came while the bogus sample was the edge's newest (and went out of
    # its cache): only that frame is lost
    assert engine.stats.ingested >= 4, engine.drops()
    assert engine.stats.refused == {"tf far from data time": 1}


def test_a_tf_loop_and_dynamic_tf_on_a_static_edge_are_refused_and_nothing_stalls(
        scene, scene_frames):
    engine = Engine(NodeConfig())
    static_tf(engine)
    for f in scene_frames[:5]:
        feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s))
    t = stamp_ns(scene_frames[5].stamp_s)
    with pytest.raises(InputRefused, match="camera_link -> map") as loop:
        engine.add_transform("camera_link", "map", t, (0, 0, 0), (0, 0, 0, 1), False)
    assert loop.value.reason == "tf loop"
    with pytest.raises(InputRefused, match=f"camera_link -> {OPTICAL}") as static:
        engine.add_transform("camera_link", OPTICAL, t, (0, 0, 0), (0, 0, 0, 1), False)
    assert static.value.reason == "tf on a static edge"
    for f in scene_frames[5:20]:
        feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s))
    assert engine.stats.ingested == 20, engine.drops()
    # the bag loops: a reset, logged with its cause; the static edge survives it
    outcomes = []
    for f in scene_frames[:5]:
        outcomes += feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s))
    resets = [o for o in outcomes if o.status == "reset"]
    assert engine.stats.resets == 1 and "behind its newest" in resets[0].reason, outcomes
    assert engine.stats.ingested == 25, engine.drops()


def test_depth_beyond_max_depth_is_invalid_and_counted(scene, scene_frames):
    engine = Engine(NodeConfig(max_depth_m=100.0))
    static_tf(engine)
    f = scene_frames[0]
    t = stamp_ns(f.stamp_s)
    pose_tf(engine, f, t)
    depth = f.depth_m.copy()
    depth[: depth.shape[0] // 2] = 1e30  # the top half "at" 1e30 m
    engine.add_image("info", t, scene.cam)
    engine.add_image("depth", t, depth)
    engine.add_image("rgb", t, (OPTICAL, f.rgb))
    assert engine.stats.ingested == 1 and engine.stats.refused == {
        "depth beyond max_depth_m": 1}
    xyz, _ = engine.cloud()
    assert len(xyz) and np.abs(xyz).max() < 100.0


@pytest.mark.parametrize("question,match", [
    ("Where is the <image> now?", "special token.*<image>"),
    ("What is at <box> ?", "special token.*<box>"),
    ("<pad> <pad> which objects move?", "special token.*<pad>"),
    ("Where is the red cube at <time>s?", "special token.*<time>"),
    ("Where is the red cube at " + "9" * 400 + "s?", "400 characters.*out of range"),
    ("Is anything at 1e300, 0, 0?", "1e300.*out of range"),
    ("Where is the red cube at 999999s?", "999999s.*outside the window.*0 .. 3.9 s"),
])
def test_questions_the_model_must_not_see_get_a_clear_refusal(fed_engine, question, match):
    engine = fed_engine
    with pytest.raises(QueryError, match=match):
        engine.ask(question)


def test_window_stamps_near_2_31_s_do_not_wrap(tiny_model, scene):
    from llava4d_ros.ros import convert

    engine = _tiny_engine(tiny_model)
    epoch = 2**31 - 1 - scene.duration_s  # the last frames are a moment before int32 max
    feed_scene(engine, scene, epoch_s=epoch)
    result = engine.ask("Which objects move?")
    assert result.window_end_s == pytest.approx(epoch + scene.duration_s - 0.1, abs=0.05)
    fields = convert.time_fields(round(result.window_end_s * 1e9))
    assert 2**31 - 2 <= fields[0] < 2**31
    with pytest.raises(QueryError, match="window_start"):
        engine.ask("Which objects move?", t_start_s=float("inf"))
    assert engine.ask("Where is the red cube at 2.5s?").text is not None  # a time inside


def test_deactivate_during_a_question_leaves_its_answer_whole(tiny_model, scene):
    """set_model(None) waits for the answer under the model lock; the answer's model_id is
    read from the model that answered (it was read from `self.model` after the lock)."""
    model = BlockingModel(tiny_model)
    engine = _tiny_engine(model)
    feed_scene(engine, scene)
    results, errors = [], []

    def ask():
        try:
            results.append(engine.ask("When did the red cube start moving?"))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    assert model.started.wait(20)
    remover = threading.Thread(target=engine.set_model, args=(None,))
    remover.start()
    time.sleep(0.2)
    model.release.set()
    asker.join(20)
    remover.join(20)
    assert not errors and results[0].model_id == "tiny-untrained-test", errors
    with pytest.raises(QueryError, match="no model"):
        engine.ask("Which objects move?")


def test_ingest_settings_come_from_the_model_in_one_place(tiny_model):
    """The patch grid, voxel, budget and window are the model's unless the node names them;
    a grid that differs is refused naming both, a window that differs is taken and named."""
    from llava4d_ros.engine import ingest_config, window_mismatch
    from llava4d_ros.model.spec import ModelSpec

    spec = ModelSpec(patch_grid=(6, 8), voxel_m=0.25, token_budget=300, window_s=8.0,
                     feature_dim=18)
    ing = ingest_config(NodeConfig(), spec)
    assert (ing.patch_grid, ing.voxel_m, ing.token_budget, ing.window_s) == ((6, 8), 0.25,
                                                                            300, 8.0)
    assert ing == spec.ingest_config(max_buffer_mb=ing.max_buffer_mb)
    assert ing.look_change == 0.0
    # a model trained on look-split tokens gets them: the setting travels with the spec
    split = ModelSpec(patch_grid=(6, 8), voxel_m=0.25, token_budget=300, window_s=8.0,
                      feature_dim=18, look_change=40.0)
    assert ingest_config(NodeConfig(), split).look_change == 40.0
    assert ing.over_budget == "coarsen"
    drop = ModelSpec(patch_grid=(6, 8), voxel_m=0.25, token_budget=300, window_s=8.0,
                     feature_dim=18, look_change=30.0, over_budget="drop")
    assert ingest_config(NodeConfig(), drop).over_budget == "drop"
    with pytest.raises(ValueError, match="patch_rows = 12 conflicts with the model"):
        ingest_config(NodeConfig(patch_rows=12), spec)
    longer = NodeConfig(window_s=30.0)
    assert ingest_config(longer, spec).window_s == 30.0
    assert "trained on 8 s windows" in window_mismatch(longer, spec)
    assert window_mismatch(NodeConfig(), spec) == ""
    assert ingest_config(NodeConfig()).window_s == 30.0  # no model: IngestConfig's
    assert Engine(NodeConfig(), tiny_model).ingestor.cfg.window_s == tiny_model.spec.window_s



def test_now_is_the_newest_frame_not_the_newest_token(tiny_model, scene, monkeypatch):
    """The newest frame made no keyframe (0.09 s after the last, camera still): the policy
    and the object map are told it is now ("3 seconds ago" counts back from it), while the
    window still ends at its newest token."""
    from helpers.scene_feed import feed_frame
    from llava4d_ros.answers.policy import AnswerPolicy

    told = {}
    answer = AnswerPolicy.answer

    def spy(self, question, tokens, t_ref_s, max_new_tokens, scene=None, **kw):
        told.update(t_end_s=kw.get("t_end_s"), now_s=scene.now_s if scene else None)
        return answer(self, question, tokens, t_ref_s, max_new_tokens, scene, **kw)

    monkeypatch.setattr(AnswerPolicy, "answer", spy)
    engine = _tiny_engine(tiny_model)
    feed_scene(engine, scene)
    last = list(frames(scene))[-1]
    (extra,) = feed_frame(engine, last, scene.cam, stamp_ns(last.stamp_s + 0.09))
    assert extra.status == "skipped"
    result = engine.ask("Where was the red cube 3 seconds ago?")
    newest_frame = EPOCH_S + last.stamp_s + 0.09
    assert told["t_end_s"] == pytest.approx(newest_frame, abs=1e-6)
    assert told["now_s"] == pytest.approx(newest_frame, abs=1e-6)
    assert result.window_end_s == pytest.approx(EPOCH_S + last.stamp_s, abs=1e-3)
    told.clear()
    engine.ask("Where was the red cube 1 second ago?", t_end_s=EPOCH_S + 2.0)
    assert told["t_end_s"] <= EPOCH_S + 2.0  # a window asked for ends where it was asked
