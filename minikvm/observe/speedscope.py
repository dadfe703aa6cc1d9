"""Layer 7 — the speedscope file: a "sampled" profile as JSON.

Laid out as https://www.speedscope.app/file-format-schema.json says: a
``shared.frames`` table of ``{"name": ...}``, and one profile of type
``"sampled"`` whose ``samples`` are lists of indexes into that table,
outermost frame first, with one ``weights`` entry per sample.
"""

from __future__ import annotations

import json
from collections import Counter

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def speedscope_document(counts: Counter[tuple[str, ...]], name: str,
                        sample_hz: int) -> dict:
    """The document for *counts* (stack → samples), weighted in seconds."""
    index: dict[str, int] = {}
    frames: list[dict[str, str]] = []
    samples: list[list[int]] = []
    weights: list[float] = []
    for stack, count in sorted(counts.items()):
        row = []
        for frame in stack:
            if frame not in index:
                index[frame] = len(frames)
                frames.append({"name": frame})
            row.append(index[frame])
        samples.append(row)
        weights.append(count / sample_hz)
    return {
        "$schema": SCHEMA,
        "shared": {"frames": frames},
        "profiles": [{
            "type": "sampled", "name": name, "unit": "seconds",
            "startValue": 0, "endValue": sum(weights),
            "samples": samples, "weights": weights,
        }],
        "name": name,
        "exporter": "minikvm",
    }


def format_speedscope(counts: Counter[tuple[str, ...]], name: str, sample_hz: int) -> str:
    """The document as the text of a ``.json`` file speedscope opens."""
    return json.dumps(speedscope_document(counts, name, sample_hz), indent=1) + "\n"
