"""What every benchmark module returns: figures measured against a reference in the same run.

A module `bench/bench_<name>.py` defines `run() -> list[Figure]`. Absolute times drift on
shared machines, so each figure is reported as a ratio to a reference measured in the
same run (a no-op view, raw SQL, raw boto3, easy-thumbnails, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Figure:
    name: str  # e.g. "thumbnail ms/image"
    sense: float
    unit: str
    goal: str  # e.g. "ratio >= 5"
    met: bool
    reference: float | None = None
    reference_label: str = ""  # e.g. "easy-thumbnails"
    ratio: float | None = None
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
