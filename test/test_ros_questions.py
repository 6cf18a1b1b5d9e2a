"""The question gate shared by ~/query and ~/ask: admission, busy, cancel, drain on close."""

import threading

import pytest

from llava4d_ros.ros.questions import NOT_ACTIVE, Goal, QuestionGate, Refused


def test_a_closed_gate_refuses_as_not_active():
    gate = QuestionGate(queue_size=2)
    with pytest.raises(Refused) as err, gate.admit():
        pass
    assert str(err.value) == NOT_ACTIVE and not err.value.busy
    assert gate.admitted == 0


def test_one_answered_plus_the_queue_are_admitted_and_the_next_is_busy():
    gate = QuestionGate(queue_size=1)
    gate.open()
    with gate.admit(), gate.admit():
        assert gate.admitted == 2
        with pytest.raises(Refused) as err, gate.admit():
            pass
        assert err.value.busy
        assert "query_queue_size = 1" in str(err.value)
    assert gate.admitted == 0
    with gate.admit():  # room again once they left
        assert gate.admitted == 1


def test_cancel_marks_the_goal_as_its_clients():
    gate = QuestionGate(queue_size=0)
    gate.open()
    goal = Goal(0.0)
    with gate.admit(b"g1", goal):
        assert gate.goals == [goal]
        assert not gate.cancel(b"other")
        assert gate.cancel(b"g1")
        assert goal.cancel.is_set() and goal.client_cancel
    assert gate.goals == []


def test_close_cancels_admitted_goals_and_waits_until_they_end():
    gate = QuestionGate(queue_size=1)
    gate.open()
    goal = Goal(0.0)
    admitted = threading.Event()
    ended = []

    def run_goal():
        with gate.admit(b"g", goal):
            admitted.set()
            goal.cancel.wait(10)  # as a generation stops at its next decode step
        ended.append(goal.client_cancel)

    t = threading.Thread(target=run_goal)
    t.start()
    assert admitted.wait(10)
    assert gate.close(drain_s=10)
    t.join(10)
    assert ended == [False]  # cancelled by the close, not by a client
    assert not gate.is_open
    with pytest.raises(Refused), gate.admit():
        pass


def test_close_waits_for_unsent_replies_and_says_when_one_is_left():
    gate = QuestionGate(queue_size=0)
    gate.open()
    gate.reply_pending()
    assert not gate.close(drain_s=0.05)
    gate.reply_pending()
    threading.Timer(0.05, gate.reply_sent).start()
    threading.Timer(0.05, gate.reply_sent).start()
    assert gate.close(drain_s=10)


def test_a_negative_queue_is_refused():
    with pytest.raises(ValueError, match="queue_size"):
        QuestionGate(queue_size=-1)
