"""`~/ask` (action/Ask.action): a question as an action, the answer so far as feedback.

Goals share the node's `QuestionGate` with `~/query` (one answered, `query_queue_size` waiting,
"busy" beyond) and always end with a result, never left open: busy and inactive ones at once
(aborted, with the reason), a cancelled one with what was said until the cancel (canceled on
its client's request; aborted with `cancelled` true when deactivate stopped it). A cancel stops
generation at the next decode step, or the goal never starts if it still waits its turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.action import ActionServer, CancelResponse

from llava4d_ros.action import Ask
from llava4d_ros.ros.questions import CLOSED_WHILE_WAITING, Goal, QuestionGate, Refused

TURN_POLL_S = 0.05  # a waiting goal looks for its cancel this often while the model is busy
CANCEL_STATE_S = 1.0  # longest a cancelled goal waits for rclpy to mark it as canceling


class AskServer:
    """The `~/ask` action server of `node`. `answer(goal_request, on_text, cancel) ->
    (success, message, Answer | None)` answers an admitted goal (the node's, shared with
    `~/query`); `refused(exc, "goal")` is told of every goal the gate turned away."""

    def __init__(self, node, gate: QuestionGate, answer: Callable, refused: Callable,
                 callback_group, qos) -> None:
        self._gate = gate
        self._answer = answer
        self._refused = refused
        self._server = ActionServer(
            node, Ask, "~/ask", self._execute, callback_group=callback_group,
            cancel_callback=self._on_cancel, goal_service_qos_profile=qos,
            result_service_qos_profile=qos, cancel_service_qos_profile=qos)

    def destroy(self) -> None:
        """Call once no goal runs; a result not yet fetched by its client is lost with it."""
        self._server.destroy()

    def _on_cancel(self, goal_handle) -> CancelResponse:
        """Accept every cancel: the goal's generation stops at its next decode step (or it
        never starts, if it still waits its turn)."""
        self._gate.cancel(bytes(goal_handle.goal_id.uuid))
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle) -> Ask.Result:
        """Admit the goal as `~/query` admits a question (or end it at once: busy, not
        active), wait for its turn, answer it with the text so far as feedback."""
        result = Ask.Result()
        goal = Goal(time.monotonic())
        try:
            with self._gate.admit(bytes(goal_handle.goal_id.uuid), goal):
                while not self._gate.turn.acquire(timeout=TURN_POLL_S):
                    if goal.cancel.is_set():  # cancelled, or deactivated, while it waited
                        return _end(goal_handle, goal, result)
                try:
                    if goal.cancel.is_set():
                        return _end(goal_handle, goal, result)

                    def feedback(text: str) -> None:
                        goal.sent += 1
                        goal_handle.publish_feedback(Ask.Feedback(
                            text=text, elapsed_s=time.monotonic() - goal.t0_s))

                    ok, message, answer = self._answer(goal_handle.request, feedback,
                                                       goal.cancel)
                    if answer is not None:
                        result.answer = answer
                        if not goal.sent and answer.text:  # the policy decided it: no LM text
                            feedback(answer.text)
                    result.success, result.message = ok, message
                    return _end(goal_handle, goal, result)
                finally:
                    self._gate.turn.release()
        except Refused as exc:  # not admitted: aborted at once, with the reason
            self._refused(exc, "goal")
            result.success, result.message = False, str(exc)
            goal_handle.abort()
            return result


def _end(goal_handle, goal: Goal, result: Ask.Result) -> Ask.Result:
    """The terminal state of an admitted goal: canceled on its client's request, aborted when
    deactivate stopped it or it failed, else succeeded."""
    if goal.cancel.is_set():
        result.cancelled = True
        answered = result.success
        if goal.client_cancel:
            result.message = "cancelled" if answered else "cancelled before it was answered"
            # rclpy marks the goal as canceling just after `_on_cancel` returned
            deadline = time.monotonic() + CANCEL_STATE_S
            while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                time.sleep(0.001)
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return result
        else:
            result.message = ("cancelled: the node was deactivated while answering"
                              if answered else CLOSED_WHILE_WAITING)
            goal_handle.abort()
            return result
    if result.success:
        goal_handle.succeed()
    else:
        goal_handle.abort()
    return result
