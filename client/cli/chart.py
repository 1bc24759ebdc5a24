"""The reciprocity chart: a PNG a liaison officer can paste into a report.

matplotlib is imported here only, and this module only for ``stats --chart``:
it costs several hundred milliseconds to load, which no other command should
pay.  The Agg backend draws without a display, so it works on a server.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caseline.client.reciprocity import Figures

DIRECTION_LABELS = {"sent": "they answer us", "received": "we answer them"}


def draw(figures: list[Figures], agency: str) -> bytes:
    """PNG bytes: median and p90 answer times (hours, left) and on-time share (%, right) per group."""
    import matplotlib  # noqa: PLC0415 - see the module docstring

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415 - after the backend is chosen

    labels = [f"{f.partner}\n{f.category}\n{DIRECTION_LABELS.get(f.direction, f.direction)}" for f in figures]
    hours = 3600.0
    medians = [(f.median_seconds or 0) / hours for f in figures]
    p90s = [(f.p90_seconds or 0) / hours for f in figures]
    on_time = [100 * (f.on_time or 0) for f in figures]
    positions = range(len(figures))
    width = 0.28

    figure = Figure(figsize=(max(6.0, 1.1 * len(figures) + 2), 4.8), dpi=100, layout="constrained")
    times = figure.add_subplot()
    times.bar([x - width for x in positions], medians, width, label="median answer time (h)", color="#4c72b0")
    times.bar(list(positions), p90s, width, label="p90 answer time (h)", color="#8faadc")
    times.set_ylabel("hours to answer")
    shares = times.twinx()
    shares.bar([x + width for x in positions], on_time, width, label="answered on time (%)", color="#55a868")
    shares.set_ylim(0, 105)
    shares.set_ylabel("answered on time (%)")
    times.set_xticks(list(positions), labels, fontsize=7)
    times.set_title(f"Reciprocity of {agency}" if figures else f"Reciprocity of {agency}: no requests")
    handles = times.get_legend_handles_labels()[0] + shares.get_legend_handles_labels()[0]
    figure.legend(handles=handles, loc="outside upper center", ncols=3, fontsize=7, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
