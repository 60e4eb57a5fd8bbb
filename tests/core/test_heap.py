"""Long-running processes freeze their start-up heap, so a full GC pass walks only what was
made since (a full pass over Django's start-up objects paused every request 65-140 ms)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, clean_env, manage


def test_the_web_process_freezes_what_it_loaded_out_of_full_passes(tmp_path: object) -> None:
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(tmp_path))
    code = (
        "import gc; before = gc.get_freeze_count(); import sense.asgi, sense.urls; "
        "walked = {id(o) for o in gc.get_objects()}; "
        "print(before, gc.get_freeze_count(), id(sense.urls.urlpatterns) in walked, "
        "id(sense.asgi.http_app.__dict__) in walked)"
    )
    result = manage("shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    before, frozen, urls_walked, app_walked = result.stdout.split()[-4:]
    assert before == "0"
    assert int(frozen) > 10_000  # Django, the apps and their URLs
    assert (urls_walked, app_walked) == ("False", "False")


def test_a_worker_process_freezes_once_when_it_boots_and_later_objects_stay_collectable() -> None:
    code = """
import gc
from sense.lib.heap import FreezeHeap

early = [[n] for n in range(1000)]
heap = FreezeHeap()
heap.after_worker_boot(None, None)
first = gc.get_freeze_count()
late = [[n] for n in range(1000)]
heap.after_worker_boot(None, None)  # a second boot in the same process keeps the first freeze
walked = {id(o) for o in gc.get_objects()}
cycle = []
cycle.append(cycle)
del cycle
print(first >= 1000, gc.get_freeze_count() == first, id(early) in walked, id(late) in walked, gc.collect() >= 1)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "False", "True", "True"]


def test_the_worker_broker_runs_the_freeze_middleware(tmp_path: object) -> None:
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(tmp_path))
    code = (
        "import dramatiq; from sense.lib.heap import FreezeHeap; "
        "print(any(isinstance(m, FreezeHeap) for m in dramatiq.get_broker().middleware))"
    )
    result = manage("shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "True"
