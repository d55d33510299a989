"""Embedded datasets: made here or shipped inside a registry package. Never a hub download.

* :func:`load_digits` -- scikit-learn's 1797 real 8x8 handwritten digits (UCI optical
  recognition of handwritten digits; shipped inside scikit-learn), optionally upsampled to
  16x16, with a fixed stratified train/validation split.
* :func:`load_image_npz` -- the same interface over a user's own ``.npz`` of images.
* :class:`GaussianMixture2D` -- a 2-D Gaussian-mixture sampler (ring or grid of modes).
* :func:`digit_captions` and :class:`CaptionTokenizer` -- captions for text-conditioned digits.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ImageData",
    "load_digits",
    "load_image_npz",
    "GaussianMixture2D",
    "DIGIT_NAMES",
    "CAPTION_TEMPLATES",
    "digit_captions",
    "CaptionTokenizer",
]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class ImageData:
    """Images scaled to [-1, 1], (N, C, H, W) float32, and integer labels (N,)."""

    images: Tensor
    labels: Tensor
    num_classes: int

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def _stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * val_fraction))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(
        -1, 1
    )


def load_digits(
    split: str = "train", size: int = 8, val_fraction: float = 0.2, split_seed: int = 0
) -> ImageData:
    """scikit-learn's digits as (N, 1, size, size) in [-1, 1] with labels 0..9.

    The train/validation split is stratified and fixed by ``split_seed`` (default: 1438
    train / 359 validation images). ``split="all"`` returns all 1797.
    """
    from sklearn.datasets import load_digits as _sk_digits

    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    d = _sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0)[
        :, None
    ]  # (N, 1, 8, 8) in [-1, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    if split != "all":
        tr, va = _stratified_split(d.target, val_fraction, split_seed)
        idx = torch.from_numpy(tr if split == "train" else va)
        x, y = x[idx], y[idx]
    return ImageData(_resize(x, size), y, 10)


def load_image_npz(path: str | os.PathLike, size: int | None = None) -> ImageData:
    """Your own images: an ``.npz`` with ``images`` (N, H, W) or (N, C, H, W) of uint8 in
    [0, 255] or floats in [0, 1], and integer ``labels`` (N,). Returns them in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with np.load(path, allow_pickle=False) as z:
        missing = {"images", "labels"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)} (found {z.files})")
        imgs, labels = z["images"], z["labels"]
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    if imgs.ndim != 4 or imgs.shape[-1] != imgs.shape[-2]:
        raise ValueError(f"{path}: images must be square (N, [C,] H, W), got shape {imgs.shape}")
    if labels.shape != (imgs.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers of shape ({imgs.shape[0]},)")
    x = imgs.astype(np.float32) / (255.0 if imgs.dtype == np.uint8 else 1.0)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{path}: image values must lie in [0, 1] (floats) or [0, 255] (uint8)")
    t = torch.from_numpy(x * 2 - 1)
    if size is not None:
        t = _resize(t, size)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageData(t, y, int(y.max()) + 1)


class GaussianMixture2D:
    """Equal-weight mixture of isotropic 2-D Gaussians on a ring (``layout="ring"``) or a
    square grid (``layout="grid"``)."""

    def __init__(
        self, n_modes: int = 8, radius: float = 2.0, std: float = 0.05, layout: str = "ring"
    ):
        if n_modes < 1 or std <= 0 or radius <= 0:
            raise ValueError("GaussianMixture2D needs n_modes >= 1, std > 0, radius > 0")
        if layout == "ring":
            a = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
            means = torch.stack([a.cos(), a.sin()], 1) * radius
        elif layout == "grid":
            k = math.isqrt(n_modes)
            if k * k != n_modes:
                raise ValueError(f"a grid layout needs a square number of modes, got {n_modes}")
            g = torch.linspace(-radius, radius, k, dtype=torch.float64)
            means = torch.cartesian_prod(g, g)
        else:
            raise ValueError(f"layout must be 'ring' or 'grid', got {layout!r}")
        self.means = means.float()  # (K, 2)
        self.std = std

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-> points (n, 2) and their mode index (n,)."""
        k = torch.randint(len(self.means), (n,), generator=generator)
        x = self.means[k] + self.std * torch.randn(n, 2, generator=generator)
        return x, k

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact mixture log-density of points x (n, 2) -> (n,)."""
        d2 = (x[:, None, :] - self.means[None]).pow(2).sum(-1)  # (n, K)
        logp = -d2 / (2 * self.std**2) - math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(logp, dim=1) - math.log(len(self.means))


# --------------------------------------------------------------------------------------
# Captions for text-conditioned digits
# --------------------------------------------------------------------------------------

CAPTION_TEMPLATES = (
    "a handwritten {name}",
    "the digit {name}",
    "a {name} written by hand",
    "the number {digit}",
    "an image of the digit {name}",
    "a small grayscale {name}",
    "handwritten number {digit}",
    "a scanned digit {digit}",
)


def digit_captions(
    labels: Tensor, generator: torch.Generator | None = None, which: Tensor | None = None
) -> list[str]:
    """One caption per label, its phrasing drawn from :data:`CAPTION_TEMPLATES`
    ("a handwritten seven", "the number 7", ...), or given as template indices ``which``."""
    if which is None:
        which = torch.randint(len(CAPTION_TEMPLATES), (len(labels),), generator=generator)
    which = which.tolist()
    return [
        CAPTION_TEMPLATES[w].format(name=DIGIT_NAMES[int(c)], digit=int(c))
        for w, c in zip(which, labels.tolist())
    ]


class CaptionTokenizer:
    """Word-level tokenizer for short captions: lower-cased words, ids ``0 = <pad>``,
    ``1 = <bos>`` (always first, so the empty caption is ``[<bos>]``), ``2 = <unk>``.

    ``CaptionTokenizer()`` knows the words of the digit captions; ``from_texts`` builds a
    vocabulary from your own captions.
    """

    PAD, BOS, UNK = 0, 1, 2
    _SPECIAL = ("<pad>", "<bos>", "<unk>")

    def __init__(self, words: list[str] | None = None, max_len: int = 8):
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (<bos> and one word), got {max_len}")
        if words is None:
            texts = [
                t.format(name=n, digit=d)
                for t in CAPTION_TEMPLATES
                for d, n in enumerate(DIGIT_NAMES)
            ]
            words = sorted({w for t in texts for w in t.split()})
        self.vocab = list(self._SPECIAL) + [w for w in words if w not in self._SPECIAL]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = max_len

    @classmethod
    def from_texts(cls, texts: list[str], max_len: int = 16) -> CaptionTokenizer:
        return cls(sorted({w for t in texts for w in t.lower().split()}), max_len)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, texts: list[str]) -> Tensor:
        """-> (B, max_len) int64 ids, <bos> first, padded with 0; longer captions are cut."""
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.BOS] + [self.index.get(w, self.UNK) for w in t.lower().split()]
            ids = ids[: self.max_len]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Tensor) -> list[str]:
        return [
            " ".join(self.vocab[i] for i in row.tolist() if i > self.UNK or i == self.UNK)
            for row in ids
        ]

    def empty(self) -> Tensor:
        """Token ids of the empty caption (the null condition of classifier-free guidance)."""
        return self.encode([""])[0]
