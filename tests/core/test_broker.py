"""Publishing from many short-lived threads (one per ASGI request) uses one connection."""

from __future__ import annotations

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
