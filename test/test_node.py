"""The llava4d node over real rclpy and DDS on loopback: lifecycle, topics, service, bad input."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import require_ros
from helpers.scene_feed import stamp_ns
from llava4d_ros.data.scene import frames, make_scene

require_ros()

import rclpy  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from helpers.node_harness import wait_for  # noqa: E402
from helpers.publish import image_msg, info_msg  # noqa: E402
from llava4d_ros.ros.node import Llava4dNode  # noqa: E402
from llava4d_ros.srv import Query  # noqa: E402

SUCCESS = TransitionCallbackReturn.SUCCESS


@pytest.fixture(scope="module")
def scene():
    return make_scene(5, n_moving=1, duration_s=5.0)


@pytest.fixture(scope="module")
def scene_frames(scene):
    return list(frames(scene))


def test_missing_model_path_leaves_node_unconfigured_and_alive(harness):
    h = harness(model_path="/definitely/not/a/model")
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert h.node._state_machine.current_state[1] == "unconfigured"
    # it still answers parameter requests and can be configured once fixed
    h.node.set_parameters([Parameter("model_path", value="")])
    assert h.node.trigger_configure() == SUCCESS


def test_query_about_moving_object_grounds_to_its_track(harness, scene, scene_frames):
    from vision_msgs.msg import Detection3DArray

    h = harness(model_path="").start()  # the embedded, trained default
    detections = []
    h.peer.create_subscription(Detection3DArray, "/llava4d/detections", detections.append, 10)
    h.pub.send_scene(scene_frames, scene.cam, hz=20.0)
    engine = h.node.engine
    assert wait_for(lambda: engine.stats.ingested >= len(scene_frames) - 2, 30), (
        engine.stats, engine.drops(), h.node.received, len(engine._pending))
    mover = next(o for o in scene.objects if o.is_dynamic)
    # every object of the scene is in the map, still ones too, named by its measured colour
    last = h.tracks[-1].tracks
    assert sorted(t.colour for t in last) == sorted(o.colour for o in scene.objects), (
        [t.label for t in last])
    track_id = next(t.id for t in last if t.colour == mover.colour)
    # from its first message on, the id is in every message: ids are stable, not re-issued
    alive = [track_id in [t.id for t in m.tracks] for m in h.tracks]
    first = alive.index(True)
    assert all(alive[first:]) and len(alive) - first >= 3, alive
    assert any(t.is_dynamic for m in h.tracks for t in m.tracks if t.id == track_id)
    # ~/detections: the same objects by id, each with category hypotheses and their scores
    assert wait_for(lambda: detections and len(detections[-1].detections) == len(last), 10)
    det = {d.id: d for d in detections[-1].detections}
    assert set(det) == {str(t.id) for t in last}
    for d in det.values():
        assert d.results and all(0.0 <= r.hypothesis.score <= 1.0 for r in d.results)
        assert [r.hypothesis.score for r in d.results] == sorted(
            (r.hypothesis.score for r in d.results), reverse=True)

    t_ask = round(min(scene.duration_s - 0.5, (mover.start_moving_s or 0) + 1.0), 1)
    resp = h.ask(f"Where is the {mover.label} at {t_ask}s?")
    assert resp.success, resp.message
    a = resp.answer
    assert a.header.frame_id == "map" and a.num_visual_tokens > 0 and a.text
    assert len(a.objects) == 1, a.text
    obj = a.objects[0]
    truth = mover.center_at(t_ask)
    got = np.array([obj.center.x, obj.center.y, obj.center.z])
    assert np.linalg.norm(got - truth) < 0.3, (a.text, truth)
    assert obj.track_id == track_id, a.text
    assert abs(obj.stamp.sec + obj.stamp.nanosec * 1e-9 - (stamp_ns(t_ask) / 1e9)) < 0.3
    namespaces = {m.ns for arr in h.markers for m in arr.markers}
    assert {"objects", "object_labels", "trajectories", "answer", "answer_text"} <= namespaces


def test_bad_input_is_counted_and_the_node_keeps_working(harness, scene, scene_frames):
    h = harness().start()
    f0 = scene_frames[0]
    pub = h.pub
    bad = [
        ("bad_rgb", dict(rgb=image_msg(f0.rgb[..., 0], "yuv422", stamp_ns(0.0)))),
        ("bad_depth", dict(depth=image_msg(f0.depth_m.astype(np.float64), "64FC1",
                                           stamp_ns(0.1)))),
    ]
    for i, (_, kw) in enumerate(bad):
        pub.send_frame(scene_frames[i], scene.cam, stamp_ns(scene_frames[i].stamp_s), **kw)
    # all-NaN depth (32FC1): no valid depth
    t = stamp_ns(scene_frames[2].stamp_s)
    pub.send_frame(scene_frames[2], scene.cam, t,
                   depth=image_msg(np.full_like(f0.depth_m, np.nan), "32FC1", t))
    # rgb and depth of different sizes
    t = stamp_ns(scene_frames[3].stamp_s)
    pub.send_frame(scene_frames[3], scene.cam, t,
                   depth=image_msg(f0.depth_m[::2, ::2].copy(), "32FC1", t))
    # (TF that never comes is covered in test_engine.py: here later TF would interpolate.)
    engine = h.node.engine
    assert wait_for(lambda: {"bad_rgb", "bad_depth"} <= set(h.node.counters), 10), \
        h.node.counters
    sub = next(s for s in h.node._sensor_subs if s.topic_name == "/rgb/image")
    assert sub.qos_profile.reliability.name == "RELIABLE"  # the override took effect
    # then good frames: all go in, and a question is answered
    good = scene_frames[10:]
    pub.send_scene(good, scene.cam, hz=20.0)
    assert wait_for(lambda: engine.stats.ingested >= len(good), 20), (
        engine.stats, engine.sync.drops, h.node.received)
    time.sleep(0.3)
    assert engine.stats.ingested == len(good)
    assert engine.stats.drops == {"no valid depth": 1, "shape mismatch": 1}, engine.stats.drops
    resp = h.ask("Which objects move?")
    assert resp.success, resp.message


def test_distorted_camera_info_is_refused(harness, scene, scene_frames):
    h = harness().start()
    f = scene_frames[0]
    t = stamp_ns(f.stamp_s)
    info = info_msg(scene.cam, t)
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    h.pub.send_frame(f, scene.cam, t)
    h.pub.info.publish(info)
    assert wait_for(lambda: "bad_info" in h.node.counters, 10), h.node.counters


def test_questions_that_cannot_be_answered_get_a_reason(harness, scene, scene_frames):
    h = harness(max_question_chars=100).start()
    r = h.ask("Which objects move?")
    assert not r.success and "no observations" in r.message
    h.pub.send_scene(scene_frames[:10], scene.cam, hz=20.0)
    assert wait_for(lambda: h.node.engine.stats.ingested >= 8, 20)
    r = h.ask("")
    assert not r.success and "empty" in r.message
    r = h.ask("why " * 40)
    assert not r.success and "limit" in r.message
    # concurrent questions are both answered
    futures = [h.client.call_async(Query.Request(question=q))
               for q in ("Which objects move?", "How many objects are there?")]
    assert wait_for(lambda: all(f.done() for f in futures), 60)
    assert all(f.result().success for f in futures)


def test_deactivate_and_activate_keep_the_buffer(harness, scene, scene_frames):
    h = harness().start()
    h.pub.send_scene(scene_frames[:10], scene.cam, hz=20.0)
    engine = h.node.engine
    assert wait_for(lambda: engine.stats.ingested >= 10, 30), engine.stats  # all in, none racing
    n = engine.stats.ingested
    assert h.node.trigger_deactivate() == SUCCESS
    assert engine.model is None
    assert wait_for(lambda: not h.client.service_is_ready(), 10)
    assert h.node.trigger_activate() == SUCCESS
    assert wait_for(h.client.service_is_ready, 20)
    assert h.node.engine.stats.ingested == n  # nothing observed was lost
    assert h.ask("Which objects move?").success


def test_frames_keep_coming_in_while_questions_are_answered(harness, scene, scene_frames):
    """Questions back to back while the camera streams: every frame is ingested (the ingest
    thread only pauses while its queue has room) and every question is answered."""
    h = harness().start()
    engine = h.node.engine
    h.pub.send_scene(scene_frames[:5], scene.cam, hz=20.0)
    assert wait_for(lambda: engine.stats.ingested == 5, 20), engine.stats
    stop, answered = threading.Event(), []

    def ask_forever():
        while not stop.is_set():
            answered.append(h.ask("Where is the red cube now?").success)

    asker = threading.Thread(target=ask_forever)
    asker.start()
    try:
        h.pub.send_scene(scene_frames[5:], scene.cam, hz=30.0)
        ok = wait_for(lambda: engine.stats.ingested == len(scene_frames), 30)
    finally:
        stop.set()
        asker.join(60)
    assert ok, (engine.stats, engine.drops(), engine.pending())
    assert len(answered) >= 3 and all(answered), answered
    assert not engine.drops() and not h.node.counters


def test_tf_listener_follows_the_node_name_and_tf_remapping():
    """`-r __node:=cam_qa -r /tf:=/robot1/tf` for the whole process (what ros2 launch passes):
    one node of that name, its TF listener named after it, listening on the remapped /tf."""
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, args=["x", "--ros-args", "-r", "__node:=cam_qa",
                                  "-r", "/tf:=/robot1/tf"])
    node = Llava4dNode(context=ctx)
    try:
        assert node.trigger_configure() == SUCCESS
        names = [n for n, _ in node.get_node_names_and_namespaces()]
        assert names.count("cam_qa") == 1 and "cam_qa_tf_listener" in names, names
        assert node._tf.topics == ("/robot1/tf", "/tf_static")
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_diagnostics_report_what_was_ingested_and_dropped(harness, scene, scene_frames):
    from diagnostic_msgs.msg import DiagnosticArray

    from llava4d_ros.ros import convert

    h = harness().start()
    seen: list[dict] = []
    h.peer.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda m: seen.append(convert.diagnostics_values(m, "/llava4d")), 10)
    h.pub.send_scene(scene_frames[:8], scene.cam, hz=20.0)
    f, t = scene_frames[8], stamp_ns(scene_frames[8].stamp_s)
    zero_depth = image_msg(np.zeros(f.depth_m.shape, np.uint16), "16UC1", t)
    h.pub.send_frame(f, scene.cam, t, depth=zero_depth)

    def settled():
        v = seen[-1] if seen else None
        return bool(v) and v.get("ingested") == "8" and v.get("dropped_no valid depth") == "1"

    assert wait_for(settled, 20), seen[-1:] or "no /diagnostics"
    v = seen[-1]
    assert v["ingest_queue"] == "0" and v["received_rgb"] == "9"
    assert v["model"] == "tiny-untrained-test" and int(v["buffer_keyframes"]) >= 1


def test_publishers_that_cannot_reach_the_node_are_named(harness):
    """A best-effort camera while the node subscribes reliably, and a wrong type on
    camera_info: each gets a warning and a counter (from the graph: the node has no QoS event
    handlers, see NO_SUB_EVENTS)."""
    from rclpy.context import Context
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from llava4d_ros.ros.node import QOS_CHECK_PERIOD_S

    h = harness().start()  # subscriptions overridden to reliable
    h.peer.create_publisher(Image, "/rgb/image", qos_profile_sensor_data)
    other = Context()  # another participant: one participant refuses two types on a topic
    rclpy.init(context=other)
    stranger = rclpy.create_node("stranger", context=other)
    try:
        stranger.create_publisher(String, "/camera_info", 10)
        assert wait_for(lambda: h.node.counters.get("incompatible_publisher", 0) >= 2,
                        2 * QOS_CHECK_PERIOD_S + 2), h.node.counters
    finally:
        stranger.destroy_node()
        rclpy.shutdown(context=other)
    problems = sorted(k[3].split(" ")[0] for k in h.node._qos_warned)
    assert problems == ["incompatible", "type"], h.node._qos_warned
