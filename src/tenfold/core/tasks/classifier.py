"""The digits classifier: a small CNN trained deterministically on the digits training split,
whose 64-d penultimate features are the space of the digits reproductions' Frechet distance
(an FID for 8x8 digits) and whose predictions check that samples show the requested digit."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import load_digits
from ..io import cached_state
from ..metrics import frechet_distance, gaussian_stats
from ..train import batch_indices

__all__ = ["DigitsClassifier", "digits_classifier"]

_CLASSIFIER_VERSION = "v1"


class DigitsClassifier(nn.Module):
    """Small CNN on (N, 1, S, S) digits in [-1, 1]; ``features`` is its 64-d penultimate layer."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, 64),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, self.size, self.size):
            raise ValueError(
                f"expected digits of shape (N, 1, {self.size}, {self.size}), got {tuple(x.shape)}"
            )
        return self.body(x)  # (N, 64)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (N, 10)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self(x).argmax(-1)

    @torch.no_grad()
    def fd(self, samples: Tensor, reference: Tensor) -> float:
        """Frechet distance between samples and reference images in this net's feature space."""
        fs = self.features(samples.float().clamp(-1, 1))
        fr = self.features(reference.float())
        return frechet_distance(*gaussian_stats(fs), *gaussian_stats(fr))


def _train_classifier(size: int, seed: int = 0, epochs: int = 60) -> DigitsClassifier:
    tr = load_digits("train", size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsClassifier(size)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    bs = 64
    steps = epochs * math.ceil(len(tr) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    for step in range(steps):
        idx = batch_indices(len(tr), bs, step, seed)
        x, y = tr.images[idx], tr.labels[idx]
        # random shifts by up to one pixel (padding with background): +1% validation accuracy
        g = torch.Generator().manual_seed(seed * 7 + step)
        dy, dx = (1 + torch.randint(-1, 2, (2,), generator=g)).tolist()
        x = F.pad(x, (1, 1, 1, 1), value=-1.0)[:, :, dy : dy + size, dx : dx + size]
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def digits_classifier(size: int = 8) -> tuple[DigitsClassifier, float]:
    """The digits feature network for ``size`` x ``size`` images and its accuracy on the
    validation split (measured on every call, so a loaded cache is checked too).

    Trained deterministically (seed 0) on first use and cached with
    :func:`tenfold.core.io.cached_state`; a damaged cache file is retrained and replaced.
    """
    spec = dict(model="digits-classifier", version=_CLASSIFIER_VERSION, size=size, seed=0)
    net = DigitsClassifier(size)
    state = cached_state(
        "digits-classifier",
        spec,
        lambda: _train_classifier(size).state_dict(),
        name="cnn",
        like=net.state_dict(),
    )
    net.load_state_dict(state)
    net.eval()
    va = load_digits("val", size)
    acc = (net.predict(va.images) == va.labels).float().mean().item()
    return net, acc
