"""Live graphs of the last minute: operations per second (ok and errors by kind) and latency.
An operation is a read, a write or a page load (a page load is several HTTP requests).

Plot state lives in each widget instance (no module-level plot). A graph redraws only when the
series it shows has changed (a new or revised second), so fast refreshes cost nothing here.
"""

from __future__ import annotations

from textual_plotext import PlotextPlot

from halab.live.session import LabSnapshot, TrafficPoint

OK_SERIES = (("reads", "reads_ok", "green"), ("writes", "writes_ok", "cyan"), ("pages", "pages_ok", "blue"))
ERR_SERIES = (("reads err", "reads_err", "red"), ("writes err", "writes_err", "magenta"),
              ("pages err", "pages_err", "orange"))


class _SeriesPlot(PlotextPlot):
    def __init__(self, seconds: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds
        self._key: tuple | None = None
        self.draws = 0

    def _window(self, s: LabSnapshot) -> list[TrafficPoint]:
        if not s.series:
            return []
        end = s.series[-1].t
        return [p for p in s.series if p.t > end - self.seconds]

    def show(self, s: LabSnapshot) -> None:
        window = self._window(s)
        key = (len(window), window[0].t if window else None, window[-1] if window else None)
        if key == self._key:
            return
        self._key = key
        plt = self.plt
        plt.clear_data()
        plt.xlim(-self.seconds, 0)
        plt.xfrequency(4)
        end = window[-1].t if window else 0.0
        xs = [round(p.t - end) for p in window]
        self.draw(plt, xs, window)
        self.draws += 1
        self.refresh()

    def draw(self, plt, xs: list[int], window: list[TrafficPoint]) -> None:  # pragma: no cover
        raise NotImplementedError


class RequestsGraph(_SeriesPlot):
    def draw(self, plt, xs, window) -> None:
        plt.title("operations/s")
        if not window:
            plt.ylim(0, 1)
            return
        for label, attr, color in OK_SERIES:
            plt.plot(xs, [getattr(p, attr) for p in window], label=label, color=color, marker="hd")
        for label, attr, color in ERR_SERIES:
            ys = [getattr(p, attr) for p in window]
            if any(ys):
                plt.plot(xs, ys, label=label, color=color, marker="hd")
        top = max(max(p.reads_ok, p.writes_ok, p.pages_ok, p.reads_err, p.writes_err, p.pages_err)
                  for p in window)
        plt.ylim(0, max(1, top * 1.15))


class LatencyGraph(_SeriesPlot):
    def draw(self, plt, xs, window) -> None:
        plt.title("latency ms")
        pts = [(x, p) for x, p in zip(xs, window, strict=True) if p.p50_ms is not None]
        if not pts:
            plt.ylim(0, 1)
            return
        plt.plot([x for x, _ in pts], [p.p50_ms for _, p in pts], label="p50", color="green",
                 marker="hd")
        p99 = [(x, p.p99_ms) for x, p in pts if p.p99_ms is not None]
        if p99:
            plt.plot([x for x, _ in p99], [y for _, y in p99], label="p99", color="orange",
                     marker="hd")
        top = max([p.p50_ms for _, p in pts] + [y for _, y in p99])
        plt.ylim(0, max(1.0, top * 1.15))
