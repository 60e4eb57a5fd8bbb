"""Dramatiq's RabbitMQ broker, publishing from one long-lived thread per process.

Dramatiq keeps one RabbitMQ connection per thread. Under ASGI, Django runs every request's
sync code in a thread of its own, so a view that sends a task would open (and never close)
one broker connection per request, until RabbitMQ runs out of file descriptors. Here every
publish from any thread is handed to one publisher thread with one connection: `enqueue`
waits for the publish (errors reach the caller as before), `enqueue_nowait` does not (for
callers whose work is already stored durably and swept, such as webhooks).

A thread's connection that RabbitMQ has closed (a thread idle past the heartbeat timeout: a
blocking connection only answers heartbeats while it is used) is replaced on next use instead
of failing every later call in that thread.

When a fire-and-forget publish fails (the broker is down), the publisher stops trying them
for `hold_off` seconds: during an outage every webhook would otherwise cost six connection
attempts and a burst of pika errors in the log, for messages the sweeper replaces anyway.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker as _RabbitmqBroker
from dramatiq.message import Message

log = logging.getLogger("sense.broker")

Publish = Callable[..., Message]
_Job = tuple[Message, "int | None", "Future[Message] | None"]


class _Publisher:
    def __init__(self, publish: Publish, capacity: int = 10_000, hold_off: float = 5.0) -> None:
        self._publish = publish
        self._capacity = capacity
        self.hold_off = hold_off
        self._down_until = 0.0  # monotonic time before which fire-and-forget sends are dropped
        self.dropped = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._jobs: queue.Queue[_Job] = queue.Queue(maxsize=capacity)

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def _ensure(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()  # a forked child starts its own thread and queue
                self._jobs = queue.Queue(maxsize=self._capacity)
                self._thread = threading.Thread(target=self._run, name="sense-broker-publisher", daemon=True)
                self._thread.start()

    def call(self, message: Message, delay: int | None, timeout: float) -> Message:
        self._ensure()
        future: Future[Message] = Future()
        self._jobs.put((message, delay, future), timeout=timeout)
        return future.result(timeout=timeout)

    def fire(self, message: Message, delay: int | None) -> bool:
        if self._held_off():
            return False
        self._ensure()
        try:
            self._jobs.put_nowait((message, delay, None))
        except queue.Full:
            log.warning("[RABBITMQ] publish queue full: %s not sent", message.actor_name)
            return False
        return True

    def _held_off(self) -> bool:
        if time.monotonic() < self._down_until:
            self.dropped += 1
            return True
        return False

    def _run(self) -> None:
        while True:
            message, delay, future = self._jobs.get()
            try:
                if future is None and self._held_off():
                    continue
                result = self._publish(message, delay=delay)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                if future is not None:
                    future.set_exception(exc)
                else:
                    self._down_until = time.monotonic() + self.hold_off
                    log.warning(
                        "[RABBITMQ] %s not sent: %s; fire-and-forget sends paused for %.0f s (stored work is swept)",
                        message.actor_name,
                        exc.__class__.__name__,
                        self.hold_off,
                    )
            else:
                if self._down_until:  # before answering: a caller sending next must see it
                    log.info("[RABBITMQ] reachable again; %d fire-and-forget send(s) were skipped", self.dropped)
                    self._down_until, self.dropped = 0.0, 0
                if future is not None:
                    future.set_result(result)
            finally:
                self._jobs.task_done()


class RabbitmqBroker(_RabbitmqBroker):
    """RabbitmqBroker whose publishes all go through one thread (see the module docstring)."""

    publish_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.publisher = _Publisher(super().enqueue)

    def _get_connection(self) -> Any:
        stale = getattr(self.state, "connection", None)
        if stale is not None and not stale.is_open:
            del self.connection  # closed under us: the parent opens a new one below
        return _RabbitmqBroker.connection.fget(self)  # type: ignore[attr-defined]

    connection = property(_get_connection, None, _RabbitmqBroker.connection.fdel)  # type: ignore[attr-defined]

    def _once_more_if_dropped(self, operation: Callable[[], Any]) -> Any:
        """Run OPERATION; if this thread's connection turns out to be gone (a server-side
        close is only noticed on use), open a new one and run it again."""
        try:
            return operation()
        except pika.exceptions.AMQPConnectionError:
            del self.connection
            return operation()

    def get_queue_message_counts(self, queue_name: str) -> tuple[int, int, int]:
        return self._once_more_if_dropped(lambda: super(RabbitmqBroker, self).get_queue_message_counts(queue_name))  # type: ignore[no-any-return]

    def flush(self, queue_name: str) -> None:
        self._once_more_if_dropped(lambda: super(RabbitmqBroker, self).flush(queue_name))

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        if self.publisher.is_current():
            return super().enqueue(message, delay=delay)
        return self.publisher.call(message, delay, self.publish_timeout)

    def enqueue_nowait(self, message: Message, *, delay: int | None = None) -> bool:
        """Hand MESSAGE to the publisher thread and return at once (False if its queue is full)."""
        return self.publisher.fire(message, delay)


def send_nowait(actor: dramatiq.Actor[Any, Any], *args: Any, **kwargs: Any) -> None:
    """Send without waiting for the broker; never raises. Only for work that is already
    stored and picked up by a sweeper if this message is lost."""
    broker = actor.broker
    message = actor.message(*args, **kwargs)
    try:
        if isinstance(broker, RabbitmqBroker):
            broker.enqueue_nowait(message)
        else:
            broker.enqueue(message)
    except Exception as exc:
        log.warning("[RABBITMQ] %s not sent: %s", actor.actor_name, exc.__class__.__name__)
