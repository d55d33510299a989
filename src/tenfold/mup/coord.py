"""Coordinate check (Tensor Programs V, Sec. 4 / Fig. 5): the mean |activation| of every layer
over the first training steps, for a list of widths. Under muP each layer's curve is flat in
width; under standard parametrisation (SP) with a fixed learning rate some layers grow.

    cc = coord_check(make_model, [32, 64, 128, 256], loss_fn, lr=2**-7, config=MuPConfig(32))
    cc.slopes()          # d log mean|x| / d log width, per layer, at the last step
    cc.plot(axes_row)    # one panel per step, one line per layer, x = width
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .api import MuPConfig, parametrize_

__all__ = ["CoordCheck", "coord_check", "log_slope"]


def _watched(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules whose output is recorded: every module holding parameters (directly or below),
    except the model itself and plain containers."""
    out = []
    for name, m in model.named_modules():
        if not name or isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            continue
        if any(True for _ in m.parameters()):
            out.append((name, m))
    return out


def _first_tensor(out) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, Tensor) and o.is_floating_point():
                return o
    return None


def log_slope(widths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(width); NaN if any value is not > 0."""
    v = np.asarray(values, dtype=float)
    w = np.asarray(widths, dtype=float)
    if v.shape != w.shape or w.ndim != 1 or len(w) < 2:
        raise ValueError(f"need two or more widths and one value each, got {w.shape}, {v.shape}")
    if np.any(~np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"widths must be finite and > 0, got {list(widths)}")
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        return float("nan")
    x = np.log(np.asarray(widths, dtype=float))
    return float(np.polyfit(x, np.log(v), 1)[0])


@dataclass
class CoordCheck:
    """``values[w, s, t, l]``: mean |output| of layer ``layers[l]`` in the forward pass after
    ``t`` optimizer steps (t = 0 is the initial model), width ``widths[w]``, seed ``s``."""

    widths: list[int]
    layers: list[str]
    values: np.ndarray
    parametrization: str
    lr: float
    meta: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.values.shape[2] - 1

    def mean(self) -> np.ndarray:
        """Average over seeds -> (widths, steps+1, layers)."""
        return self.values.mean(axis=1)

    def slopes(self, step: int | None = None) -> dict[str, float]:
        """Per layer, the log-log slope of mean |activation| against width at ``step``
        (default: the last). Layers that are exactly zero at some width (a zero-initialised
        readout at step 0) give NaN."""
        t = self.steps if step is None else step
        m = self.mean()
        return {name: log_slope(self.widths, m[:, t, i]) for i, name in enumerate(self.layers)}

    def seed_slopes(self, step: int | None = None) -> list[dict[str, float]]:
        """:meth:`slopes` of each seed on its own (the seed-to-seed noise of the check)."""
        t = self.steps if step is None else step
        return [
            {n: log_slope(self.widths, self.values[:, s, t, i]) for i, n in enumerate(self.layers)}
            for s in range(self.values.shape[1])
        ]

    def to_json(self) -> dict:
        return {
            "widths": self.widths,
            "layers": self.layers,
            "parametrization": self.parametrization,
            "lr": self.lr,
            "mean_abs": self.mean().tolist(),
            "meta": self.meta,
        }

    def plot(self, axes, title: str = "") -> None:
        """One panel per step t = 1..steps on ``axes`` (a sequence of matplotlib axes): x =
        width, y = mean |activation|, one line per layer, log-log, as in the muP papers."""
        import matplotlib.pyplot as plt

        m = self.mean()
        cmap = plt.get_cmap("viridis")
        steps = list(range(1, self.steps + 1))[-len(axes) :]
        for ax, t in zip(axes, steps):
            for i in range(len(self.layers)):
                y = m[:, t, i]
                if np.all(y > 0):
                    ax.plot(self.widths, y, color=cmap(i / max(len(self.layers) - 1, 1)), lw=0.8)
            ax.set(xscale="log", yscale="log", xlabel="width", title=f"{title} t={t}")
            shown, last = [], 0.0  # label widths at least 1.3x apart so labels never overlap
            for w in self.widths:
                if w >= 1.3 * last:
                    shown.append(w)
                    last = w
            ax.set_xticks(shown)
            ax.set_xticklabels([str(w) for w in shown], fontsize=7)
            ax.minorticks_off()
        axes[0].set_ylabel("mean |activation|")


def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    loss_fn: Callable[[nn.Module, int], Tensor],
    *,
    lr: float,
    config: MuPConfig | None = None,
    steps: int = 4,
    seeds: Sequence[int] = (0, 1, 2),
    betas: tuple[float, float] = (0.9, 0.999),
    progress: Callable[[str], None] | None = None,
) -> CoordCheck:
    """Train ``make_model(width)`` for ``steps`` AdamW steps at learning rate ``lr`` for each
    width and seed, and record every layer's mean |output| in each forward pass.

    ``config=None`` is SP (the model's own init, one LR for all); a :class:`MuPConfig` makes
    each model muP first (``lr`` is then the base-width LR). ``loss_fn(model, step)`` returns
    the scalar loss of the step's batch (keep the batches the same across widths).
    """
    if len(widths) < 2:
        raise ValueError("coord_check needs at least two widths")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths) or len(
        set(widths)
    ) != len(widths):
        raise ValueError(f"coord_check widths must be distinct integers >= 1, got {list(widths)}")
    if steps < 1 or not seeds:
        raise ValueError("coord_check needs steps >= 1 and at least one seed")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    layers: list[str] | None = None
    values = None
    for wi, width in enumerate(widths):
        for si, seed in enumerate(seeds):
            torch.manual_seed(seed)
            model = make_model(width)
            if config is not None:
                opt = parametrize_(model, config, lr=lr, betas=betas)
            else:
                opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=0.0)
            watched = _watched(model)
            names = [n for n, _ in watched]
            if layers is None:
                layers = names
                values = np.zeros((len(widths), len(seeds), steps + 1, len(layers)))
            elif names != layers:
                raise ValueError("the models' layers differ between widths")
            record: dict[str, float] = {}

            def hook(name, record=record):
                def fn(_mod, _inp, out):
                    t = _first_tensor(out)
                    if t is not None:
                        record[name] = t.detach().abs().mean().item()

                return fn

            handles = [m.register_forward_hook(hook(n)) for n, m in watched]
            try:
                for t in range(steps + 1):
                    record.clear()
                    loss = loss_fn(model, t)
                    values[wi, si, t] = [record.get(n, float("nan")) for n in layers]
                    if t == steps:
                        break
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            finally:
                for h in handles:
                    h.remove()
        if progress is not None:
            progress(f"coord check {'muP' if config else 'SP'}: width {width} done")
    return CoordCheck(list(widths), layers or [], values, "mup" if config is not None else "sp", lr)
