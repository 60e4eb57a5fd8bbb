"""The in-process worker of embedded mode runs delayed messages on time, however many longer
delays are waiting (the sandbox's webhooks, senders handing over with a delay)."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.brokers.stub import StubBroker

from sense.worker import in_process_worker


def test_short_delays_are_not_held_up_behind_long_ones() -> None:
    broker = StubBroker()
    ran: dict[str, float] = {}

    @dramatiq.actor(broker=broker, queue_name="q")
    def job(name: str) -> None:
        ran[name] = time.monotonic()

    worker = in_process_worker(broker, threads=2)  # a plain worker prefetches 4 per queue
    worker.start()
    try:
        start = time.monotonic()
        for n in range(8):
            job.send_with_options(args=(f"long-{n}",), delay=6_000)
        for n in range(8):
            job.send_with_options(args=(f"short-{n}",), delay=300)
        deadline = start + 3
        while time.monotonic() < deadline and len(ran) < 8:
            time.sleep(0.05)
    finally:
        worker.stop()

    assert sorted(ran) == [f"short-{n}" for n in range(8)]
    assert max(ran.values()) - start < 2
