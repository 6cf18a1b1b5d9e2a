"""Admission of questions: `~/query` requests and `~/ask` goals share one gate.

One question is answered at a time (`turn`), `queue_size` more wait for their turn, and any
beyond that are refused "busy" at once, never left unanswered. The gate also counts the
`~/query` replies the executor has still to send, and holds the admitted `~/ask` goals so that
closing it can cancel them: the node withdraws its service only once `close` returned, because
destroying a service whose reply is still to be sent raised InvalidHandle out of the executor.

Pure threading, no rclpy: the node owns one gate and asks it; tests drive it directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

NOT_ACTIVE = "node is not active"
CLOSED_WHILE_WAITING = "node is no longer active (deactivated while waiting)"


class Refused(Exception):
    """A question not admitted; `busy` tells a full queue from a closed gate."""

    def __init__(self, message: str, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy


class Goal:
    """An admitted `~/ask` goal: when it started (monotonic seconds), its cancel event (set
    by a cancel request or by `QuestionGate.close`; generation stops at its next decode step),
    whether its client asked, and how many feedback messages it sent."""

    def __init__(self, t0_s: float) -> None:
        self.t0_s = t0_s
        self.cancel = threading.Event()
        self.client_cancel = False
        self.sent = 0


class QuestionGate:
    """See the module docstring. Starts closed; `open` on activate, `close` on deactivate."""

    def __init__(self, queue_size: int) -> None:
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.queue_size = queue_size
        self.turn = threading.Lock()  # held while a question is answered
        self._cv = threading.Condition()
        self._open = False
        self._admitted = 0  # answered or waiting their turn
        self._replies_unsent = 0
        self._goals: dict[bytes, Goal] = {}

    @property
    def is_open(self) -> bool:
        with self._cv:
            return self._open

    @property
    def admitted(self) -> int:
        with self._cv:
            return self._admitted

    @property
    def goals(self) -> list[Goal]:
        with self._cv:
            return list(self._goals.values())

    def busy_message(self) -> str:
        limit = 1 + self.queue_size
        return (f"busy: {limit} questions are being answered or waiting (query_queue_size = "
                f"{self.queue_size}); ask again later")

    def open(self) -> None:
        with self._cv:
            self._open = True

    @contextmanager
    def admit(self, goal_id: bytes | None = None, goal: Goal | None = None) -> Iterator[None]:
        """Hold a place while the block runs (the question waits for `turn` in it and is
        answered); raises `Refused` when the gate is closed or full. A `goal` is registered
        under `goal_id` for as long, so that `close` and `cancel` find it."""
        with self._cv:
            if not self._open:
                raise Refused(NOT_ACTIVE, busy=False)
            if self._admitted >= 1 + self.queue_size:
                raise Refused(self.busy_message(), busy=True)
            self._admitted += 1
            if goal is not None:
                self._goals[goal_id] = goal
        try:
            yield
        finally:
            with self._cv:
                self._admitted -= 1
                if goal is not None:
                    del self._goals[goal_id]
                self._cv.notify_all()

    def cancel(self, goal_id: bytes) -> bool:
        """A client's cancel of an admitted goal (False: none such)."""
        with self._cv:
            goal = self._goals.get(goal_id)
            if goal is None:
                return False
            goal.client_cancel = True
            goal.cancel.set()
            return True

    def reply_pending(self) -> None:
        """A `~/query` reply the executor will send after its callback returns."""
        with self._cv:
            self._replies_unsent += 1

    def reply_sent(self) -> None:
        with self._cv:
            self._replies_unsent -= 1
            self._cv.notify_all()

    def close(self, drain_s: float) -> bool:
        """Stop admitting, cancel every admitted goal, and wait up to `drain_s` seconds until
        every reply was sent and every goal ended; False if some were still out."""
        with self._cv:
            self._open = False
            for goal in self._goals.values():
                goal.cancel.set()
            self._cv.notify_all()
            return self._cv.wait_for(lambda: self._replies_unsent == 0 and not self._goals,
                                     drain_s)
