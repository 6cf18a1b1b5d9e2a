"""`~/ask` over real rclpy and loopback DDS: streamed feedback, the same answer as `~/query`,
cancel mid-answer, busy goals and deactivate with goals running (issue 32)."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import require_ros
from llava4d_ros.data.scene import frames, make_scene

require_ros()

from action_msgs.msg import GoalStatus  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402

from helpers.node_harness import SUCCESS, wait_for  # noqa: E402
from llava4d_ros.action import Ask  # noqa: E402
from llava4d_ros.srv import Query  # noqa: E402

# the tiny untrained model says gibberish until max_new_tokens: long enough to stream
LONG = 120
STEP_S = 0.02  # a decode step made this slow, so a cancel or a deactivate lands mid-answer


@pytest.fixture(scope="module")
def scene():
    return make_scene(5, n_moving=1, duration_s=4.0)


@pytest.fixture(scope="module")
def scene_frames(scene):
    return list(frames(scene))


class Goal:
    """One goal sent through an ActionClient: its feedback texts, handle and result."""

    def __init__(self, client: ActionClient, question: str, **fields):
        self.feedback: list[Ask.Feedback] = []
        self.future = client.send_goal_async(
            Ask.Goal(question=question, **fields),
            feedback_callback=lambda m: self.feedback.append(m.feedback))
        self.result_future = None

    def accepted(self, timeout_s: float = 20.0) -> bool:
        if not wait_for(self.future.done, timeout_s) or not self.future.result().accepted:
            return False
        self.result_future = self.future.result().get_result_async()
        return True

    def wait(self, timeout_s: float = 60.0):
        """(status, Ask.Result)."""
        assert self.result_future is not None or self.accepted(), "goal not accepted"
        assert wait_for(self.result_future.done, timeout_s), "no result"
        r = self.result_future.result()
        return r.status, r.result

    def cancel(self):
        return self.future.result().cancel_goal_async()


def start(harness, scene, scene_frames, **params):
    h = harness(**params).start()
    assert h.action.wait_for_server(timeout_sec=20), "~/ask never appeared"
    h.pub.send_scene(scene_frames[:10], scene.cam, hz=20.0)
    assert wait_for(lambda: h.node.engine.stats.ingested >= 10, 30), h.node.engine.stats
    return h


def slow_decoding(node) -> list[bool]:
    """Make each LM forward take STEP_S; returns, per forward, whether a goal's cancel was set
    when it ran (a cancel must stop generation within one step)."""
    after_cancel: list[bool] = []

    def hook(*_):
        after_cancel.append(any(g.cancel.is_set() for g in node.questions.goals))
        time.sleep(STEP_S)

    node.engine.model.lm.register_forward_hook(hook)
    return after_cancel


def question(scene) -> str:
    mover = next(o for o in scene.objects if o.is_dynamic)
    return f"When did the {mover.label} start moving?"  # the network's to answer: the LM


def test_a_goal_streams_its_answer_and_the_result_is_the_services(harness, scene, scene_frames):
    h = start(harness, scene, scene_frames, max_new_tokens=LONG)
    t0, t1 = h.node.engine.window()
    window = {"window_start": _stamp(t0 - 0.01), "window_end": _stamp(t1 + 0.01)}
    g = Goal(h.action, question(scene), **window)
    status, result = g.wait()
    assert status == GoalStatus.STATUS_SUCCEEDED, result.message
    assert result.success and not result.cancelled and result.message == "ok"
    texts = [f.text for f in g.feedback]
    assert len(texts) >= 2, texts
    assert texts[-1] == result.answer.text  # the stream ends with the whole answer
    assert all(a != b for a, b in zip(texts, texts[1:]))  # each message says something new
    elapsed = [f.elapsed_s for f in g.feedback]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    served = h.ask(question(scene), **{k: v for k, v in window.items()})
    assert served.success, served.message
    assert served.answer.text == result.answer.text
    assert served.answer.num_visual_tokens == result.answer.num_visual_tokens
    assert [(o.track_id, o.label, o.center) for o in served.answer.objects] == [
        (o.track_id, o.label, o.center) for o in result.answer.objects]


def test_cancel_stops_the_answer_within_a_step_and_returns_what_was_said(
        harness, scene, scene_frames):
    h = start(harness, scene, scene_frames, max_new_tokens=LONG)
    whole = h.ask(question(scene))
    assert whole.success, whole.message
    forwards = slow_decoding(h.node)
    g = Goal(h.action, question(scene))
    assert g.accepted()
    assert wait_for(lambda: len(g.feedback) >= 2, 30), g.feedback
    response = g.cancel()
    assert wait_for(response.done, 10)
    assert len(response.result().goals_canceling) == 1
    status, result = g.wait()
    assert status == GoalStatus.STATUS_CANCELED, result.message
    assert result.cancelled and result.success and result.message == "cancelled"
    said = result.answer.text
    assert said and said == g.feedback[-1].text
    assert whole.answer.text.startswith(said) and len(said) < len(whole.answer.text)
    # no decode step starts after the cancel; at most one forward fills a slot at the end
    assert sum(forwards) <= 1, forwards
    assert len(forwards) < LONG
    # the node lives on: the next goal is answered whole
    status, result = Goal(h.action, question(scene)).wait()
    assert status == GoalStatus.STATUS_SUCCEEDED and not result.cancelled


def test_goals_beyond_the_queue_are_busy_and_deactivate_cancels_the_running_one(
        harness, scene, scene_frames):
    h = start(harness, scene, scene_frames, max_new_tokens=LONG, query_queue_size=1)
    slow_decoding(h.node)
    running = Goal(h.action, question(scene))
    assert running.accepted()
    assert wait_for(lambda: running.feedback, 30)
    waiting = Goal(h.action, "Which objects move?")
    assert waiting.accepted()
    assert wait_for(lambda: h.node.questions.admitted == 2, 10)
    # the queue is full for goals and service calls alike: each told "busy" at once
    status, busy = Goal(h.action, "How many objects are there?").wait(10)
    assert status == GoalStatus.STATUS_ABORTED and not busy.success
    assert busy.message.startswith("busy"), busy.message
    served = h.ask("How many objects are there?", timeout=10)
    assert not served.success and served.message.startswith("busy")
    assert h.node.counters["query_busy"] == 2
    assert not running.result_future.done()  # still generating

    result = []
    deactivating = threading.Thread(target=lambda: result.append(h.node.trigger_deactivate()))
    deactivating.start()
    deactivating.join(60)
    assert result == [SUCCESS]
    status, stopped = running.wait(10)
    assert status == GoalStatus.STATUS_ABORTED
    assert stopped.cancelled and stopped.success and "deactivated" in stopped.message
    assert stopped.answer.text == running.feedback[-1].text
    status, told = waiting.wait(10)
    assert status == GoalStatus.STATUS_ABORTED and not told.success
    assert "no longer active" in told.message
    assert h.thread.is_alive()
    # inactive: the server is still there (results stay fetchable) and says why it refuses
    status, inactive = Goal(h.action, "Which objects move?").wait(10)
    assert status == GoalStatus.STATUS_ABORTED and inactive.message == "node is not active"
    assert h.node.trigger_activate() == SUCCESS
    status, again = Goal(h.action, "Which objects move?").wait()
    assert status == GoalStatus.STATUS_SUCCEEDED and again.success, again.message


def test_a_refused_question_ends_its_goal_with_the_reason(harness, scene, scene_frames):
    h = start(harness, scene, scene_frames)
    status, result = Goal(h.action, "   ").wait(20)
    assert status == GoalStatus.STATUS_ABORTED
    assert not result.success and "empty" in result.message


def _stamp(t_s: float):
    from builtin_interfaces.msg import Time

    sec, nsec = divmod(round(t_s * 1e9), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def test_ask_and_query_take_the_same_fields():
    """`ros2 action send_goal ... "{question: ...}"` and the service: one set of names."""
    assert list(Ask.Goal.get_fields_and_field_types()) == list(
        Query.Request.get_fields_and_field_types())
    assert list(Ask.Result.get_fields_and_field_types()) == [
        *Query.Response.get_fields_and_field_types(), "cancelled"]


def test_fast_decoding_on_the_cpu_leaves_the_node_inactive_with_the_reason(harness):
    h = harness(decode_mode="compile")
    assert h.node.trigger_configure() == SUCCESS
    assert h.node.trigger_activate() != SUCCESS
    assert h.node._state_machine.current_state[1] == "inactive"


def test_an_answer_decided_without_generating_is_sent_once_whole(harness, scene, scene_frames):
    """An answer with no tokens to stream (a rule decided it, or a model that does not
    stream): one feedback, its whole text."""
    from llava4d_ros.model.llava4d import ModelAnswer

    h = start(harness, scene, scene_frames)
    h.node.engine.model.answer = lambda *a, **k: ModelAnswer(text="There are 3 objects.",
                                                             boxes=())
    g = Goal(h.action, "How many objects are there?")
    status, result = g.wait()
    assert status == GoalStatus.STATUS_SUCCEEDED and result.answer.text
    assert [f.text for f in g.feedback] == [result.answer.text]
