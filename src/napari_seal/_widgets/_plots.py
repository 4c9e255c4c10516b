"""Small dock-widget charts: a live loss plot, gene bars (QPainter) and a bar chart."""

import math
import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget


class LossPlot(QWidget):
    """Live plot of every loss term against the training step, painted with QPainter.

    A matplotlib redraw of even a small axes costs 75-250 ms of the GUI thread on a
    CPU-only machine (text layout and rasterisation, competing with the training's
    threads); this widget paints lines, ticks and a legend directly in ~1 ms, so the
    event loop stays within its 100 ms budget while a training runs. Repaints are
    throttled to ``min_redraw_s`` and coalesced by Qt.
    """

    COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    MARGINS = (46, 10, 10, 30)  # left, top, right, bottom (px)

    def __init__(self, *, min_redraw_s: float = 0.5):
        super().__init__()
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self._min_redraw_s = min_redraw_s
        self._last_draw = 0.0
        self.setMinimumHeight(200)
        self.setMinimumWidth(280)

    def clear(self) -> None:
        self.series.clear()
        self.update()

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
        self.update()

    def _ranges(self) -> tuple[float, float, float, float] | None:
        xs = [x for s, _ in self.series.values() for x in s]
        ys = [y for _, s in self.series.values() for y in s if math.isfinite(y)]
        if not xs or not ys:
            return None
        x0, x1 = min(xs), max(xs)
        if x1 == x0:
            x1 = x0 + 1
        y0, y1 = min(ys), max(ys)
        pad = 0.08 * (y1 - y0) if y1 > y0 else max(abs(y1) * 0.1, 1e-3)
        return x0, x1, y0 - pad, y1 + pad

    def paintEvent(self, event):  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))  # napari's theme is dark
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        left, top, right, bottom = self.MARGINS
        w = self.width() - left - right
        h = self.height() - top - bottom
        if w < 20 or h < 20:
            return
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        painter.setPen(QPen(QColor("#333333"), 1))
        painter.drawRect(left, top, w, h)
        painter.drawText(left + w // 2 - 12, self.height() - 4, "step")
        painter.save()
        painter.translate(10, top + h // 2 + 10)
        painter.rotate(-90)
        painter.drawText(0, 0, "loss")
        painter.restore()
        ranges = self._ranges()
        if ranges is None:
            return
        x0, x1, y0, y1 = ranges

        def px(x: float) -> float:
            return left + (x - x0) / (x1 - x0) * w

        def py(y: float) -> float:
            return top + h - (y - y0) / (y1 - y0) * h

        for x in _ticks(x0, x1, integer=True):
            painter.drawLine(QPointF(px(x), top + h), QPointF(px(x), top + h + 3))
            painter.drawText(QPointF(px(x) - 8, top + h + 14), f"{x:g}")
        for y in _ticks(y0, y1):
            painter.drawLine(QPointF(left - 3, py(y)), QPointF(left, py(y)))
            painter.drawText(QPointF(4, py(y) + 3), f"{y:.3g}")
        painter.setClipRect(left, top, w, h)
        for i, (xs, ys) in enumerate(self.series.values()):
            color = QColor(self.COLORS[i % len(self.COLORS)])
            painter.setPen(QPen(color, 1.4))
            pts = [
                QPointF(px(x), py(y))
                for x, y in zip(xs, ys, strict=True)
                if math.isfinite(y)
            ]
            if len(pts) == 1:
                painter.drawEllipse(pts[0], 1.5, 1.5)
            elif pts:
                painter.drawPolyline(QPolygonF(pts))
        painter.setClipping(False)
        for i, name in enumerate(self.series):  # legend, top right
            color = QColor(self.COLORS[i % len(self.COLORS)])
            y = top + 12 + 12 * i
            painter.setPen(QPen(color, 2))
            x_leg = left + w - 86
            painter.drawLine(QPointF(x_leg, y - 3), QPointF(x_leg + 14, y - 3))
            painter.setPen(QPen(QColor("#333333"), 1))
            painter.drawText(QPointF(left + w - 68, y), name)


class GeneBars(QWidget):
    """Horizontal bars, one row per gene: the nearest spots' mean expression (bar) and
    the mean over all reference spots (black tick), painted with QPainter (~1 ms, so a
    lookup never stalls the event loop). ``rows`` keeps what is shown, for tests."""

    ROW_PX = 15
    LABEL_PX = 62

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[str, float, float]] = []
        self.title = ""
        self.hide()  # shown with the first lookup

    def show_genes(self, rows: list[tuple[str, float, float]], *, title: str) -> None:
        """``rows``: ``(gene, mean over the nearest spots, mean over all spots)``."""
        self.rows = [(str(g), float(m), float(r)) for g, m, r in rows]
        self.title = title
        self.setMinimumHeight(28 + self.ROW_PX * max(1, len(self.rows)))
        self.show()
        self.update()

    def paintEvent(self, event):  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        painter.setPen(QPen(QColor("#333333"), 1))
        painter.drawText(QPointF(4, 12), self.title)
        values = [v for _, m, r in self.rows for v in (m, r) if math.isfinite(v)]
        hi = max(values, default=0.0)
        left, top = self.LABEL_PX, 20
        w = self.width() - left - 40
        if hi <= 0 or w < 20:
            return
        for i, (gene, mean, ref) in enumerate(self.rows):
            y = top + i * self.ROW_PX
            painter.setPen(QPen(QColor("#333333"), 1))
            painter.drawText(QPointF(4, y + 10), gene)
            if math.isfinite(mean):
                painter.fillRect(int(left), int(y + 2), int(w * mean / hi),
                                 self.ROW_PX - 4, QColor("#c2185b"))
                painter.drawText(QPointF(left + w * mean / hi + 3, y + 10),
                                 f"{mean:.2f}")
            if math.isfinite(ref):
                x = left + w * ref / hi
                painter.setPen(QPen(QColor("black"), 2))
                painter.drawLine(QPointF(x, y), QPointF(x, y + self.ROW_PX - 1))


def _ticks(lo: float, hi: float, *, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values in ``[lo, hi]``."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=10 * mag)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


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

    def show_bars(self, values: dict[str, float], *, ylabel: str,
                  title: str = "") -> None:
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
