"""Progress of one product, counted in tracks: a bar on a terminal, plain lines elsewhere.

The pipeline reports how many tracks each finished batch held; this module turns that into
what a person watching wants: ``musicnn: 120/315 tracks, 3.1 tracks/s, ETA 1 min`` — a
redrawn tqdm bar when stdout is a terminal, a line every ``PLAIN_PROGRESS_EVERY_S`` seconds
otherwise (a log file gets no carriage returns). Ray's own bars are off (``ray_env``), so
this is the only one; it writes to stdout because the driver's stderr goes to OUT/logs/.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from soundclust_ray.config import PLAIN_PROGRESS_EVERY_S


def product_label(product: str) -> str:
    """What the user asked for: ``embeddings/musicnn`` → ``musicnn``; ``features`` stays."""
    return product.rsplit("/", 1)[-1]


def eta_text(seconds: float) -> str:
    """A rounded duration a person reads at a glance: ``40 s``, ``3 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class TrackProgress:
    """Counts tracks done out of ``total`` for one product; ``close()`` ends at 100 %.

    ``say`` prints a plain line (the run's own printer, silent with --quiet); ``bars``: the
    run may draw bars (not --quiet), which it does when stdout is a terminal.
    """

    def __init__(self, product: str, total: int, say: Callable[[str], None], bars: bool):
        self.label, self.total, self.say = product_label(product), total, say
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if bars and sys.stdout.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, desc=self.label, unit="track", file=sys.stdout, dynamic_ncols=True
            )

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last_line >= PLAIN_PROGRESS_EVERY_S:
            self.last_line = time.monotonic()
            self.say(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done}/{self.total} tracks, {rate:.1f} tracks/s"
        if 0 < self.done < self.total:
            text += f", ETA {eta_text((self.total - self.done) / rate)}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
