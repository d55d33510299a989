"""Digits diffusion, the recipe that core's and the methods' image experiments share:
:class:`DigitsDiffusionConfig` (backbone, width, steps, sampling), :class:`DigitsTask`
(conditioning, EDM loss and sampling for any backbone: class labels for DiT/U-ViT, random
caption phrasings such as "a handwritten seven" for PixArt/MMDiT) and :func:`train_digits`,
which trains one backbone with the core :class:`~tenfold.core.train.Trainer` and scores its
samples by Frechet distance in the digits classifier's feature space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..data import CAPTION_TEMPLATES, DIGIT_NAMES, CaptionTokenizer, digit_captions, load_digits
from ..diffusion import EDMConfig, EDMPrecond, edm_loss, heun_sample
from ..models import BACKBONES, BackboneConfig
from ..train import StepContext, TrainConfig, Trainer
from ..validate import check_config
from .classifier import DigitsClassifier, digits_classifier

__all__ = [
    "Family",
    "DigitsDiffusionConfig",
    "DigitsTask",
    "DIGITS_RULES",
    "check_digits_config",
    "train_digits",
    "digits_references",
    "sample_grid",
]


Family = Literal["dit", "uvit", "pixart", "mmdit"]


# The rules every digits-diffusion config shares (core.validate.check_config words).
DIGITS_RULES = dict(
    n_heads=">=1",
    image_size=(8, 16),  # digits are 8x8, optionally upsampled to 16x16
    steps=">=1",
    batch_size="[1,1438]",  # at most the 1438 training digits
    lr=">0",
    warmup_steps=">=0",
    ema_decay="(0,1)",
    eval_samples=">=20",  # two per class, for a covariance estimate
    sampler_steps=">=1",
    cfg_scale=">=0",
    cond_dropout_prob="[0,1)",
)


def check_digits_config(cfg, **rules) -> None:
    """Check a digits-diffusion config: :data:`DIGITS_RULES` plus ``rules`` of its own."""
    check_config(cfg, **DIGITS_RULES, **rules)


@dataclass(frozen=True)
class DigitsDiffusionConfig:
    backbone: Family = "dit"
    model: str = ""  # a preset of the backbone; "" = its digits preset
    n_heads: int = 4  # width = n_heads * head_dim of the preset
    image_size: int = 8
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    eval_every: int = 1000  # 0: evaluate only at the end
    eval_samples: int = 1000  # per evaluation, spread evenly over the 10 classes
    sampler_steps: int = 18
    cfg_scale: float = 1.5  # classifier-free guidance scale of the evaluation samples
    cond_dropout_prob: float = 0.1  # labels / captions dropped for classifier-free guidance

    def __post_init__(self):
        check_digits_config(self, eval_every=">=0")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        presets = BACKBONES[self.backbone].presets
        if self.model and self.model not in presets:
            raise ValueError(
                f"model must be a {self.backbone} preset ({', '.join(presets)}), got {self.model!r}"
            )

    def model_config(self) -> BackboneConfig:
        bb = BACKBONES[self.backbone]
        preset = self.model or next(k for k in bb.presets if "Digits" in k)
        extra = (
            {"num_classes": 10, "class_dropout_prob": self.cond_dropout_prob}
            if bb.conditioning == "class"
            else {}
        )
        return bb.config_cls(
            **{
                **bb.presets[preset],
                "n_heads": self.n_heads,
                "input_size": self.image_size,
                **extra,
            }
        )


class DigitsTask:
    """Conditioning, EDM loss and sampling of digits for one backbone family: class labels
    for DiT/U-ViT, random caption phrasings ("a handwritten seven") for PixArt/MMDiT."""

    def __init__(self, family: str, cond_dropout_prob: float = 0.1, edm: EDMConfig | None = None):
        self.family = family
        self.text = BACKBONES[family].conditioning == "text"
        self.tok = CaptionTokenizer() if self.text else None
        self.dropout = cond_dropout_prob
        self.edm = edm or EDMConfig()

    @property
    def null(self) -> int | Tensor:
        """The guidance null: the null label 10, or the empty caption."""
        return self.tok.empty() if self.text else 10

    def condition(
        self,
        labels: Tensor,
        generator: torch.Generator | None = None,
        drop: Tensor | None = None,
        which: Tensor | None = None,
    ) -> Tensor:
        """Labels (B,) -> what the backbone takes as y; rows in ``drop`` get the null.
        Captions use the phrasings ``which`` (B,) or draw them from ``generator``."""
        if self.text:
            ids = self.tok.encode(digit_captions(labels.cpu(), generator, which=which))
            if drop is not None:
                ids[drop.cpu()] = self.tok.empty()
            return ids.to(labels.device)
        if drop is None:
            return labels
        return torch.where(drop, torch.full_like(labels, 10), labels)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor], ctx: StepContext) -> Tensor:
        """EDM loss of a batch; all randomness from ``ctx`` (deterministic, DDP-exact)."""
        x, labels = batch
        n = x.shape[0]
        drop = ctx.rand(n) < self.dropout
        which = None
        if self.text:  # caption phrasings drawn for the global batch; this rank takes its shard
            g = torch.randint(
                len(CAPTION_TEMPLATES), (n * ctx.world_size,), generator=ctx.generator
            )
            which = ctx.shard(g)
        y = self.condition(labels, which=which, drop=drop)
        sigma = (ctx.randn(n) * self.edm.P_std + self.edm.P_mean).exp()
        return edm_loss(model, x, y, self.edm, sigma=sigma, noise=ctx.randn(*x.shape)).mean()

    @torch.no_grad()
    def samples(
        self, denoiser: nn.Module, n: int, size: int, steps: int, cfg_scale: float, seed: int
    ) -> tuple[Tensor, Tensor]:
        """n samples, classes 0..9 in turn -> images (n, 1, size, size) on the CPU, labels (n,)."""
        g = torch.Generator().manual_seed(seed)  # CPU draws: the same samples on any device
        labels = torch.arange(n) % 10
        noise = torch.randn(n, 1, size, size, generator=g)
        y = self.condition(labels, g)
        dev = next(denoiser.parameters()).device
        null = self.null.to(dev) if isinstance(self.null, Tensor) else self.null
        x = heun_sample(
            denoiser, noise.to(dev), y.to(dev), steps, cfg_scale=cfg_scale, null_label=null
        )
        return x.clamp(-1, 1).cpu(), labels


def train_digits(
    cfg, ctx, clf: DigitsClassifier, eval_every: int, desc: str, ckpt: bool = True
) -> tuple[Trainer, DigitsTask]:
    """``ctx`` is the experiment's RunContext (seed, progress, out_dir). Build ``cfg.model_config()``'s backbone, train it with EDM on the digits training split
    (FD of EMA samples every ``eval_every`` steps and at the end) and return the trainer."""
    size = cfg.image_size
    train = load_digits("train", size)
    bb = BACKBONES[cfg.backbone]
    torch.manual_seed(ctx.seed)
    net = bb.model_cls(cfg.model_config())
    task = DigitsTask(cfg.backbone, cfg.cond_dropout_prob)
    D = EDMPrecond(net, task.edm.sigma_data)

    def eval_fn(model, step):
        xs, _ = task.samples(
            model, cfg.eval_samples, size, cfg.sampler_steps, cfg.cfg_scale, seed=ctx.seed + 1
        )
        return {"fd": clf.fd(xs, train.images)}

    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        ema_decay=cfg.ema_decay,
        eval_every=eval_every,
        seed=ctx.seed,
        progress=ctx.progress,
        desc=desc,
    )
    trainer = Trainer(
        D,
        task.loss,
        (train.images, train.labels),
        tcfg,
        eval_fn=eval_fn,
        ckpt_dir=ctx.out_dir if ckpt else None,
    )
    trainer.fit()
    return trainer, task


def sample_grid(ax_rows, xs: Tensor, ys: Tensor, n: int, label_rows: bool = True) -> None:
    """Draw ``n`` samples of each class 0..9, one row of ``ax_rows`` per class."""
    for c in range(10):
        imgs = xs[ys == c][:n]
        for j in range(n):
            a = ax_rows[c][j]
            a.imshow(imgs[j, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
            a.set_xticks([])
            a.set_yticks([])
            if j == 0 and label_rows:
                a.set_ylabel(DIGIT_NAMES[c], rotation=0, ha="right", va="center", fontsize=8)


def digits_references(size: int):
    """Training and validation digits, the classifier with its validation accuracy, and the
    real-data FD floor (held-out real digits against the training set)."""
    train, val = load_digits("train", size), load_digits("val", size)
    clf, clf_acc = digits_classifier(size)
    return train, val, clf, clf_acc, clf.fd(val.images, train.images)
