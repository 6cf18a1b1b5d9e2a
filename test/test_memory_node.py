"""The object memory wired into the node, with real rclpy over loopback DDS: a restart keeps
ids and answers "when did you last see X" across it; save and clear as services; a corrupt
file is moved aside and the node comes up; kill -9 while ingesting at 15 Hz leaves a memory
that is whole up to its last commit."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import REPO, require_ros
from llava4d_ros.data.scene import CameraWaypoint, ObjectSpec, SceneSpec, default_camera, render

RED = ObjectSpec(0, "red", "cube", (0.4, 0.4, 0.4), ((0.0, (0.9, -1.3, 0.2)),))
GREEN = ObjectSpec(1, "green", "cylinder", (0.3, 0.3, 0.45), ((0.0, (0.9, 1.2, 0.225)),))


def _frames(eye, target, seconds: float = 3.0, fps: float = 10.0):
    """Rendered frames of the two-object room from a still camera."""
    scene = SceneSpec(0, (RED, GREEN), (6.0, 5.0, 2.8),
                      (CameraWaypoint(0.0, eye, target),), default_camera(), fps=fps,
                      duration_s=seconds)
    return scene, [render(scene, float(t)) for t in scene.frame_times_s]


BOTH = ((-2.0, 0.0, 1.7), (0.9, 0.0, 0.2))  # sees both objects
GREEN_ONLY = ((-0.4, 1.2, 1.5), (0.9, 1.2, 0.2))  # the red cube is far out of view


def _ids(h) -> dict[str, int]:
    return {t.colour: t.id for t in h.tracks[-1].tracks} if h.tracks else {}


def _fill(h, frames, scene, epoch_s: float) -> None:
    from helpers.node_harness import wait_for

    n0 = h.node.engine.stats.ingested
    h.pub.send_scene(frames, scene.cam, hz=20.0, epoch_s=epoch_s)
    assert wait_for(lambda: h.node.engine.stats.ingested >= n0 + len(frames) - 2, 30)


def test_a_restart_keeps_ids_and_answers_when_it_last_saw_something(harness, tmp_path):
    from helpers.node_harness import wait_for

    db = tmp_path / "memory.db"
    scene, frames = _frames(*BOTH)
    first = harness(memory_path=str(db), model_path="").start()
    _fill(first, frames, scene, epoch_s=1000.0)
    assert wait_for(lambda: set(_ids(first)) == {"red", "green"}, 20), _ids(first)
    ids = _ids(first)
    first.close()  # destroys the node: the memory commits what is queued and closes

    scene2, frames2 = _frames(*GREEN_ONLY)
    second = harness(memory_path=str(db), model_path="").start()
    _fill(second, frames2, scene2, epoch_s=1600.0)  # ten minutes later
    assert wait_for(lambda: "green" in _ids(second), 20), _ids(second)
    assert _ids(second)["green"] == ids["green"]  # the same object, seen again, same id
    assert "red" not in _ids(second)  # remembered, not seen this run: not reported
    r = second.ask("When did you last see the red cube?")
    assert r.success, r.message
    assert r.answer.text.startswith("I last saw the red cube (object "), r.answer.text
    assert [o.track_id for o in r.answer.objects] == [ids["red"]]
    assert "min ago" in r.answer.text  # about ten minutes before the newest frame
    where = second.ask("Where was the red cube 9 minutes ago?")
    assert where.success and "the red cube (object" in where.answer.text, where.answer.text
    (obj,) = where.answer.objects
    assert abs(obj.center.x - 0.9) < 0.2 and abs(obj.center.y + 1.3) < 0.2
    # new objects continue after the remembered ids
    assert min(_ids(second).values()) >= 1 and max(ids.values()) < second.node.engine.\
        objects_map.next_id


def test_save_and_clear_over_services(harness, tmp_path):
    require_ros()
    from std_srvs.srv import Trigger

    from helpers.node_harness import wait_for
    from llava4d_ros.memory import MemoryStore
    from llava4d_ros.srv import SaveMemory

    db, snap = tmp_path / "memory.db", tmp_path / "snapshot.db"
    scene, frames = _frames(*BOTH)
    h = harness(memory_path=str(db)).start()
    _fill(h, frames, scene, epoch_s=1000.0)
    assert wait_for(lambda: len(_ids(h)) == 2, 20)
    save = h.peer.create_client(SaveMemory, "/llava4d/memory/save")
    clear = h.peer.create_client(Trigger, "/llava4d/memory/clear")
    assert wait_for(save.service_is_ready, 10) and wait_for(clear.service_is_ready, 10)
    h.node._memory.flush()
    future = save.call_async(SaveMemory.Request(path=str(snap)))
    assert wait_for(future.done, 20) and future.result().success, future.result().message
    with MemoryStore(snap, 3600.0, 100.0) as copy:
        assert {o.colour for o in copy.objects()} == {"red", "green"}
    future = clear.call_async(Trigger.Request())
    assert wait_for(future.done, 20) and future.result().success
    assert h.node._memory.objects() == [] and h.node._memory.span() is None


def test_a_corrupt_memory_is_moved_aside_and_the_node_comes_up(harness, tmp_path, capfd):
    db = tmp_path / "memory.db"
    db.write_bytes(os.urandom(8192))
    h = harness(memory_path=str(db)).start()  # configure and activate succeed
    assert h.node._memory.status().level in ("ok", "warn")
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("memory.db.corrupt-")]
    assert len(aside) == 1
    assert "memory" in capfd.readouterr().err  # the log line says where it went


@pytest.mark.parametrize("seconds", [4.0])
def test_kill_9_while_ingesting_leaves_the_memory_whole(tmp_path, seconds, ros_context):
    """The node in its own process, frames at 15 Hz, SIGKILL: the file passes
    `PRAGMA integrity_check`, holds the objects, and its newest stamp is within ~1 s (the
    commit period, plus a keyframe) of the last frame the node could have ingested."""
    import threading

    import rclpy

    from helpers.publish import ScenePublisher
    from helpers.scene_feed import stamp_ns

    db = tmp_path / "memory.db"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(tmp_path / "node.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llava4d_ros.ros.node", "--ros-args", "-r",
         "__node:=llava4d", "-p", f"memory_path:={db}", "-p", "device:=cpu",
         "-p", f"model_path:={REPO / 'llava4d_ros' / 'model' / 'default'}",
         *(a for t in ("/rgb/image", "/depth/image", "/camera_info") for a in (
             "-p", f"qos_overrides.{t}.subscription.reliability:=reliable"))],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    peer = rclpy.create_node("llava4d_kill_peer", context=ros_context)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    sent_s = []
    try:
        pub = ScenePublisher(peer)
        deadline = time.monotonic() + 90
        while not pub.matched() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pub.matched(), (tmp_path / "node.log").read_text()[-2000:]
        pub.send_static()
        scene, frames = _frames(*BOTH, seconds=8.0, fps=15.0)
        t_end = time.monotonic() + seconds + 3.0
        k = 0
        while time.monotonic() < t_end:
            f = frames[k % len(frames)]
            t_s = 1000.0 + k / 15.0
            pub.send_frame(f, scene.cam, stamp_ns(t_s, 0.0))
            sent_s.append(t_s)
            k += 1
            time.sleep(1 / 15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        executor.shutdown()
        spinner.join(timeout=10)  # destroying the node under a running spin raised there
        peer.destroy_node()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    from llava4d_ros.memory import MemoryStore

    with MemoryStore(db, 3600.0, 100.0) as store:
        assert {o.colour for o in store.objects()} == {"red", "green"}
        span = store.span()
        assert span is not None
        # at most ~1 s lost: the commit period, a keyframe, and the node's ingest queue
        assert span[1] >= sent_s[-1] - 2.5, (span, sent_s[-1])


def test_replay_memory_lets_a_second_bag_ask_about_the_first(tmp_path):
    """`llava4d-replay BAG --memory PATH` twice: the second bag's answers reach back into what
    the first one saw."""
    from llava4d_ros.data import bagtools
    from llava4d_ros.replay import main

    db = tmp_path / "memory.db"
    one = SceneSpec(0, (RED, GREEN), (6.0, 5.0, 2.8), (CameraWaypoint(0.0, *BOTH),),
                    default_camera(), fps=10.0, duration_s=3.0)
    two = SceneSpec(0, (RED, GREEN), (6.0, 5.0, 2.8), (CameraWaypoint(0.0, *GREEN_ONLY),),
                    default_camera(), fps=10.0, duration_s=3.0)
    bagtools.write_scene_bag(tmp_path / "one", one, epoch_s=1000.0)
    bagtools.write_scene_bag(tmp_path / "two", two, epoch_s=1300.0)
    assert main([str(tmp_path / "one"), "--no-model", "--memory", str(db),
                 "--out", str(tmp_path / "o1")]) == 0
    assert main([str(tmp_path / "two"), "--memory", str(db), "--out", str(tmp_path / "o2"),
                 "-q", "When did you last see the red cube?"]) == 0
    answer = (tmp_path / "o2" / "answers.jsonl").read_text()
    assert "I last saw the red cube (object" in answer and "min ago" in answer, answer


def test_engine_reads_durations_beyond_the_window_only_with_a_memory():
    from llava4d_ros.engine import QueryError, _check_times

    with pytest.raises(QueryError, match="outside the window"):
        _check_times("Where was the mug 200 seconds ago?", 100.0, 130.0)
    _check_times("Where was the mug 200 seconds ago?", 100.0, 130.0, durations_ok=True)
    with pytest.raises(QueryError):
        _check_times("Where was the mug at 200s?", 100.0, 130.0, durations_ok=True)


def test_an_unwritable_memory_is_an_error_on_diagnostics_and_the_node_answers(
        harness, tmp_path):
    """A memory the node cannot write (its directory is a file here; read-only or a full disk
    the same): configure still succeeds, /diagnostics says ERROR with the reason, and
    questions are answered from the window."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from helpers.node_harness import wait_for

    (tmp_path / "a_file").write_text("not a directory")
    h = harness(memory_path=str(tmp_path / "a_file" / "memory.db")).start()
    statuses = []
    h.peer.create_subscription(DiagnosticArray, "/diagnostics",
                               lambda m: statuses.extend(m.status), 10)
    scene, frames = _frames(*BOTH)
    _fill(h, frames, scene, epoch_s=1000.0)
    assert wait_for(lambda: any(s.level == DiagnosticStatus.ERROR for s in statuses), 10)
    err = next(s for s in statuses if s.level == DiagnosticStatus.ERROR)
    assert err.message.startswith("memory writes stopped:"), err.message
    assert {kv.key: kv.value for kv in err.values}["memory"] == "error"
    assert h.ask("How many objects are there?").success
