"""Where a model stops gaining from bigger batches, measured while it serves.

Triton cuts a batch at `max_batch_size` (or at a `preferred_batch_size` that
config.pbtxt names). On a CPU a large model may gain nothing past a small batch, or
lose: DenseNet-121 on 2 cores runs no faster per image past batch 4-8 and slower
past 8, where its activations outgrow the cache, while every request in a batch of
32 waits for the whole batch and the model idles while 32 answers go out and 32
clients send again. So when config.pbtxt names no preferred size, the batcher asks
this curve for its cap: batch sizes are grouped in powers of two up to the maximum,
each group keeps a moving mean of compute seconds per item, and the knee is the
smallest group within `tolerance` of the cheapest. Until a larger group has been
measured as no cheaper than the knee, batches may grow to the maximum (Triton's
behaviour). Every `explore_every`-th batch is cut one group above or below the
current cap, in turn, so the curve keeps being measured as the load and the machine
change (and a steady load that always fills the maximum still finds the knee).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Group:
    per_item_s: float
    samples: int = 1


def group_bounds(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to and including `max_batch_size` (e.g. 24: 1 2 4 8 16 24)."""
    bounds = [1]
    while bounds[-1] * 2 < max_batch_size:
        bounds.append(bounds[-1] * 2)
    if bounds[-1] < max_batch_size:
        bounds.append(max_batch_size)
    return bounds


class BatchKnee:
    def __init__(
        self,
        max_batch_size: int,
        *,
        tolerance: float = 0.02,
        min_samples: int = 3,
        explore_every: int = 8,
        smoothing: float = 0.25,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.bounds = group_bounds(max(max_batch_size, 1))
        self.tolerance = tolerance
        self.min_samples = min_samples
        self.explore_every = explore_every
        self.smoothing = smoothing
        self._groups: dict[int, _Group] = {}
        self.batches_seen = 0

    def _bound(self, size: int) -> int:
        return next(b for b in self.bounds if size <= b)

    def observe(self, size: int, compute_s: float) -> None:
        """One batch of `size` items ran in `compute_s` seconds."""
        if size < 1 or size > self.max_batch_size:
            return
        self.batches_seen += 1
        per_item = compute_s / size
        group = self._groups.get(self._bound(size))
        if group is None:
            self._groups[self._bound(size)] = _Group(per_item)
            return
        group.per_item_s += self.smoothing * (per_item - group.per_item_s)
        group.samples += 1

    def curve(self) -> dict[int, float]:
        """Measured groups (enough samples): upper bound -> mean seconds per item."""
        return {
            bound: g.per_item_s
            for bound, g in sorted(self._groups.items())
            if g.samples >= self.min_samples
        }

    def knee(self) -> int | None:
        """The cap the curve supports, or None while no larger group has been measured
        as no cheaper than a smaller one (then nothing caps: the maximum)."""
        curve = self.curve()
        if not curve:
            return None
        cheapest = min(curve.values())
        knee = next(b for b, cost in curve.items() if cost <= cheapest * (1 + self.tolerance))
        return knee if knee < max(curve) else None

    def limit(self) -> int:
        """The largest batch to cut next (the same until the next `observe`). Every
        `explore_every`-th batch tries a neighbour group instead, up and down in turn
        (down only from the maximum), so the curve around the cap stays measured."""
        knee = self.knee()
        at = knee if knee is not None else self.bounds[-1]
        if self.batches_seen % self.explore_every != self.explore_every - 1:
            return at
        i = self.bounds.index(at)
        up = (self.batches_seen // self.explore_every) % 2 == 0
        if up and i + 1 < len(self.bounds):
            return self.bounds[i + 1]
        return self.bounds[i - 1] if i > 0 else at
