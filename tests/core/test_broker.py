"""Publishing from many short-lived threads (one per ASGI request) uses one connection."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import dramatiq
import pytest

from sense.lib.broker import RabbitmqBroker, send_nowait
from sense.tasks import worker_ping
from tests.workers import flush_queues


@pytest.mark.django_db
def test_sends_from_fifty_threads_share_one_rabbitmq_connection() -> None:
    broker = dramatiq.get_broker()
    assert isinstance(broker, RabbitmqBroker)
    flush_queues()
    before = len(broker.connections)
    errors: list[BaseException] = []

    def request_thread(n: int) -> None:
        try:
            worker_ping.send(f"thread-{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request_thread, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(broker.connections) - before <= 1
    assert broker.get_queue_message_counts("default")[0] >= 50
    flush_queues()


def test_send_nowait_never_raises_when_the_broker_is_down(db: None) -> None:
    from tests.helpers import free_port

    closed = dramatiq.brokers.rabbitmq.RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")

    @dramatiq.actor(actor_name="probe_down", broker=closed)
    def actor(token: str) -> None:
        pass

    send_nowait(actor, "x")  # logged, not raised
    with pytest.raises(Exception):  # noqa: B017 - the plain send does raise
        actor.send("x")


def test_after_a_failed_publish_fire_and_forget_sends_pause_instead_of_retrying_each() -> None:
    from dramatiq.message import Message

    from sense.lib.broker import _Publisher

    calls: list[str] = []
    broker_up = threading.Event()

    def publish(message: Message, delay: int | None = None) -> Message:
        calls.append(message.message_id)
        if not broker_up.is_set():
            raise ConnectionError("broker down")
        return message

    publisher = _Publisher(publish, hold_off=60)
    messages: list[Message[Any]] = [
        Message(queue_name="q", actor_name="a", args=(n,), kwargs={}, options={}) for n in range(100)
    ]
    publisher.fire(messages[0], None)
    publisher._jobs.join()
    assert len(calls) == 1
    for message in messages[1:]:
        publisher.fire(message, None)  # dropped at once: the broker failed moments ago
    publisher._jobs.join()
    assert len(calls) == 1 and publisher.dropped == 99

    # Sends that wait for an answer still try (and report the failure to their caller).
    with pytest.raises(ConnectionError):
        publisher.call(messages[1], None, timeout=5)
    broker_up.set()
    assert publisher.call(messages[2], None, timeout=5) is messages[2]
    # A success ends the pause.
    assert publisher.fire(messages[3], None)
    publisher._jobs.join()
    assert calls[-1] == messages[3].message_id and publisher.dropped == 0


@pytest.mark.django_db
def test_a_thread_whose_idle_connection_the_server_closed_gets_a_new_one(settings: Any) -> None:
    """The CI failure of 2026-11-29: the test thread's connection sat idle past the heartbeat
    timeout, RabbitMQ closed it, and every later call in that thread failed on it."""
    import time

    separator = "&" if "?" in settings.RABBITMQ_URL else "?"
    broker = RabbitmqBroker(url=f"{settings.RABBITMQ_URL}{separator}heartbeat=1")
    try:
        broker.declare_queue("idle-probe")
        assert broker.get_queue_message_counts("idle-probe") == (0, 0, 0)
        first = broker.connection
        time.sleep(6)  # no I/O: the connection misses its heartbeats (1 s) and the server drops it

        assert broker.get_queue_message_counts("idle-probe") == (0, 0, 0)
        assert broker.connection is not first and broker.connection.is_open
        first.close() if first.is_open else None

        time.sleep(6)
        broker.flush("idle-probe")  # the same for a purge
        broker.join("idle-probe", min_successes=1, timeout=5000)
    finally:
        with contextlib.suppress(Exception):
            broker.channel.queue_delete("idle-probe")
            broker.channel.queue_delete("idle-probe.DQ")
            broker.channel.queue_delete("idle-probe.XQ")
        broker.close()
