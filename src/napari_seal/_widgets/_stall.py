"""How late napari's event loop runs: a QTimer that records its worst lateness."""

import time

from qtpy.QtCore import QTimer

__all__ = ["StallProbe"]


class StallProbe:
    """A timer every ``interval_ms``; ``worst_ms`` is its worst lateness."""

    def __init__(self, interval_ms: int = 20) -> None:
        self.interval = interval_ms / 1000
        self.worst_s = 0.0
        self.stalls: list[tuple[float, float]] = []  # (when, ms) of ticks > 50 ms late
        self._t0 = time.perf_counter()
        self._last: float | None = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            late = now - self._last - self.interval
            self.worst_s = max(self.worst_s, late)
            if late > 0.05:
                self.stalls.append((round(now - self._t0, 3), round(1000 * late, 1)))
        self._last = now

    def start(self) -> None:
        """Start measuring."""
        self._last = self._t0 = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        """Stop measuring."""
        self.timer.stop()

    @property
    def worst_ms(self) -> float:
        """Worst lateness so far, in milliseconds."""
        return 1000 * self.worst_s
