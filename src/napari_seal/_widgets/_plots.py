"""Small matplotlib canvases for dock widgets: a live loss plot and a bar chart."""

import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class LossPlot(FigureCanvasQTAgg):
    """Live plot of every loss term against the training step.

    Lines are updated in place (no re-layout) and redraws are throttled, so a
    redraw costs a few milliseconds of the GUI thread.
    """

    def __init__(self, *, min_redraw_s: float = 0.5):
        self.figure = Figure(figsize=(4, 2.6))
        self.figure.subplots_adjust(left=0.14, right=0.97, top=0.95, bottom=0.17)
        super().__init__(self.figure)
        self.ax = self.figure.add_subplot(111)
        self.setMinimumHeight(200)
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self.lines: dict = {}
        self._min_redraw_s = min_redraw_s
        self._last_draw = 0.0
        self.clear()

    def clear(self) -> None:
        had_data = bool(self.series)
        self.series.clear()
        self.lines.clear()
        self.ax.clear()
        self.ax.set_xlabel("step", fontsize=8)
        self.ax.set_ylabel("loss", fontsize=8)
        self.ax.tick_params(labelsize=7)
        if had_data:  # an empty plot is already drawn; a draw is ~70 ms of GUI thread
            self.draw_idle()

    def add(self, step: int, terms: dict[str, float], *, force: bool = False) -> None:
        for name, value in terms.items():
            xs, ys = self.series.setdefault(name, ([], []))
            xs.append(step)
            ys.append(float(value))
        now = time.monotonic()
        if force or now - self._last_draw >= self._min_redraw_s:
            self._last_draw = now
            self.redraw()

    def redraw(self) -> None:
        for name, (xs, ys) in self.series.items():
            line = self.lines.get(name)
            if line is None:
                (line,) = self.ax.plot(xs, ys, label=name, linewidth=1.2)
                self.lines[name] = line
                self.ax.legend(fontsize=7, loc="upper right")
            else:
                line.set_data(xs, ys)
        self.ax.relim()
        self.ax.autoscale_view()
        self.draw_idle()


class BarChart(FigureCanvasQTAgg):
    """Grouped bars, e.g. mean Pearson of SEAL vs the frozen encoder per target mode."""

    def __init__(self):
        # fixed margins: tight_layout re-measures every text on each draw (and each
        # dock resize), ~100 ms of the GUI thread
        self.figure = Figure(figsize=(4, 2.4))
        self.figure.subplots_adjust(left=0.16, right=0.97, top=0.88, bottom=0.2)
        super().__init__(self.figure)
        self.ax = self.figure.add_subplot(111)
        self.setMinimumHeight(200)
        self.hide()  # shown with the first result: an empty chart only takes room

    def show_bars(self, values: dict[str, float], *, ylabel: str, title: str = "") -> None:
        self.ax.clear()
        names = list(values)
        heights = [values[n] for n in names]
        colors = ["#1f77b4" if "SEAL" in n else "#999999" for n in names]
        bars = self.ax.bar(range(len(names)), heights, color=colors)
        self.ax.set_xticks(range(len(names)), names, fontsize=7)
        self.ax.set_ylabel(ylabel)
        if title:
            self.ax.set_title(title, fontsize=8)
        for bar, h in zip(bars, heights, strict=True):
            self.ax.text(bar.get_x() + bar.get_width() / 2, h, f"{h:.3f}",
                         ha="center", va="bottom", fontsize=7)
        self.show()
        self.draw_idle()
