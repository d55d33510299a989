"""Plotting helpers of the reproductions (matplotlib on the non-interactive Agg backend)."""

from __future__ import annotations

from typing import Any

__all__ = ["pyplot", "plot_run"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no screen needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(ax, result: Any, label: str) -> None:
    """Draw one run's training loss (a moving average over ~2% of the run, thin) and its
    validation losses (dots, same colour) on ``ax``. ``result`` has ``curve`` and ``evals``
    as lists of [step, loss] (a :class:`tenfold.core.tasks.lm.RunResult` or its dict)."""
    import numpy as np

    get = result.get if isinstance(result, dict) else lambda k: getattr(result, k)
    c = np.array(get("curve"))
    if not len(c):
        return
    k = max(1, len(c) // 50)
    sm = np.convolve(c[:, 1], np.ones(k) / k, mode="valid")
    (line,) = ax.plot(c[k - 1 :, 0], sm, lw=1, alpha=0.6, label=f"{label} (train)")
    e = np.array(get("evals"))
    if len(e):
        ax.plot(e[:, 0], e[:, 1], "o-", color=line.get_color(), ms=3, lw=1.5)
