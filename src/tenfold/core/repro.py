"""The foundation's own end-to-end experiments.

* ``core/dit-digits`` -- a diffusion backbone (DiT by default; ``--set backbone=pixart`` and
  so on for the others) trained with EDM on scikit-learn's digits: Frechet distance (in the
  digits classifier's feature space) against training steps, a sample grid, and the
  classifier's accuracy on samples of each requested class.
* ``core/backbones-digits`` -- the four backbones (DiT, U-ViT, PixArt-alpha, MMDiT) trained
  on the same budget and compared; PixArt and MMDiT are conditioned on captions.

:class:`DigitsTask` (conditioning, loss and sampling for any backbone) and
:func:`train_digits` are reused by the method experiments (e.g. muP's learning-rate sweeps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .data import CAPTION_TEMPLATES, DIGIT_NAMES, CaptionTokenizer, digit_captions, load_digits
from .diffusion import EDMConfig, EDMPrecond, edm_loss, heun_sample
from .experiment import Claim, Result, RunContext, experiment
from .metrics import DigitsClassifier, digits_classifier
from .train import StepContext, TrainConfig, Trainer
from .transformer import BACKBONES, BackboneConfig

Family = Literal["dit", "uvit", "pixart", "mmdit"]


def _check_common(cfg) -> None:
    if cfg.image_size not in (8, 16):
        raise ValueError(
            f"image_size must be 8 or 16 (digits are 8x8, optionally upsampled), got {cfg.image_size}"
        )
    if cfg.eval_samples < 20:
        raise ValueError("eval_samples must be >= 20 (two per class) for a covariance estimate")
    for name in ("steps", "batch_size", "sampler_steps", "n_heads"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.warmup_steps < 0:
        raise ValueError("warmup_steps must be >= 0")
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if not 0 < cfg.ema_decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
    if cfg.cfg_scale < 0 or not 0 <= cfg.cond_dropout_prob < 1:
        raise ValueError("cfg_scale must be >= 0 and cond_dropout_prob in [0, 1)")


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
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        presets = BACKBONES[self.backbone].presets
        if self.model and self.model not in presets:
            raise ValueError(
                f"model must be a {self.backbone} preset ({', '.join(presets)}), got {self.model!r}"
            )
        if self.eval_every < 0:
            raise ValueError("eval_every must be >= 0")
        _check_common(self)

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
    cfg, ctx: RunContext, clf: DigitsClassifier, eval_every: int, desc: str, ckpt: bool = True
) -> tuple[Trainer, DigitsTask]:
    """Build ``cfg.model_config()``'s backbone, train it with EDM on the digits training split
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


def _sample_grid(ax_rows, xs: Tensor, ys: Tensor, n: int, label_rows: bool = True) -> None:
    for c in range(10):
        imgs = xs[ys == c][:n]
        for j in range(n):
            a = ax_rows[c][j]
            a.imshow(imgs[j, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
            a.set_xticks([])
            a.set_yticks([])
            if j == 0 and label_rows:
                a.set_ylabel(DIGIT_NAMES[c], rotation=0, ha="right", va="center", fontsize=8)


def _references(size: int):
    """Training and validation digits, the classifier with its validation accuracy, and the
    real-data FD floor (held-out real digits against the training set)."""
    train, val = load_digits("train", size), load_digits("val", size)
    clf, clf_acc = digits_classifier(size)
    return train, val, clf, clf_acc, clf.fd(val.images, train.images)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@experiment(
    "core/dit-digits",
    DigitsDiffusionConfig,
    presets={
        "quick": dict(
            n_heads=2,
            steps=2000,
            batch_size=64,
            lr=2e-3,
            warmup_steps=100,
            eval_every=500,
            eval_samples=300,
            sampler_steps=10,
        ),
        "full": dict(),
    },
    summary="Class-conditional DiT (or --set backbone=uvit|pixart|mmdit) trained with EDM on scikit-learn's 8x8 digits: FD against steps, samples, per-class accuracy.",
)
def dit_digits(cfg: DigitsDiffusionConfig, ctx: RunContext) -> Result:
    plt = _plt()
    size = cfg.image_size
    train, val, clf, clf_acc, fd_floor = _references(size)
    ctx.log(
        f"digits classifier: validation accuracy {clf_acc:.4f}; real-data FD floor {fd_floor:.2f}"
    )

    trainer, task = train_digits(
        cfg, ctx, clf, cfg.eval_every, desc=f"core/dit-digits [{cfg.backbone}]"
    )
    model, history, evals = trainer.eval_model(), trainer.history, trainer.evals
    net = trainer.model.net
    mcfg = cfg.model_config()

    # Final samples: per-class accuracy under the classifier, and a grid.
    n_per = -(-max(cfg.eval_samples, len(val)) // 10)  # at least as many samples as the floor uses
    xs, ys = task.samples(
        model, 10 * n_per, size, cfg.sampler_steps, cfg.cfg_scale, seed=ctx.seed + 2
    )
    pred = clf.predict(xs)
    per_class = [(pred[ys == c] == c).float().mean().item() for c in range(10)]
    acc = sum(per_class) / 10
    # FD is biased upward at small sample counts: for a like-for-like comparison with the
    # real-data floor (359 held-out digits), also measure the final model on 359 samples.
    fd_matched = clf.fd(xs[: len(val)], train.images)
    fd_first, fd_last = evals[0]["fd"], evals[-1]["fd"]
    name = type(net).__name__

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = [h["step"] for h in history]
    losses = torch.tensor([h["loss"] for h in history])
    k = max(len(losses) // 50, 1)
    smooth = losses.unfold(0, k, k).mean(1) if len(losses) >= k else losses
    ax[0].plot(steps[k - 1 :: k][: len(smooth)], smooth.tolist())
    ax[0].set(xlabel="step", ylabel="EDM loss", title="training loss", yscale="log")
    ax[1].plot(
        [e["step"] for e in evals], [e["fd"] for e in evals], "o-", label=f"{name} samples (EMA)"
    )
    ax[1].axhline(fd_floor, color="gray", ls="--", label="real held-out digits")
    ax[1].set(
        xlabel="step", ylabel="FD (classifier features)", title="Frechet distance", yscale="log"
    )
    ax[1].legend()
    fig.tight_layout()
    ctx.figure(fig, "training")

    grid_n = min(n_per, 10)
    fig, axes = plt.subplots(10, grid_n, figsize=(grid_n * 0.6, 6.3))
    _sample_grid(axes, xs, ys, grid_n)
    fig.suptitle("samples, one row per requested " + ("caption's digit" if task.text else "class"))
    ctx.figure(fig, "samples")

    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.bar(range(10), per_class)
    ax.set(xticks=range(10), xlabel="requested class", ylabel="classifier accuracy", ylim=(0, 1.02))
    ctx.figure(fig, "per_class_accuracy")

    n_params = sum(p.numel() for p in net.parameters())
    what = "captions" if task.text else "labels"
    claims = [
        Claim.check(
            f"EDM training of a conditional {name} improves sample quality over training (FD falls)",
            f"FD {fd_first:.2f} at step {evals[0]['step']} -> {fd_last:.2f} at step {evals[-1]['step']}",
            fd_last < fd_first if len(evals) > 1 else None,
            "a single evaluation cannot show a trend" if len(evals) < 2 else "",
        ),
        Claim.check(
            f"Samples are of the requested digit (conditioning on {what} works)",
            f"mean per-class accuracy {acc:.3f} (min {min(per_class):.3f}) under a classifier with {clf_acc:.3f} validation accuracy",
            acc >= 0.9,
            "threshold 0.9 = well above chance (0.1) yet below the classifier's own accuracy",
        ),
    ]
    return Result(
        metrics={
            "fd_first": fd_first,
            "fd_final": fd_last,
            "fd_real_floor": fd_floor,
            "fd_final_at_floor_n": fd_matched,
            "class_accuracy": acc,
            "classifier_val_accuracy": clf_acc,
            "final_loss": float(losses[-max(len(losses) // 10, 1) :].mean()),
            "params": n_params,
            "steps": cfg.steps,
        },
        claims=claims,
        tables={
            "fd_vs_step": evals,
            "per_class_accuracy": [{"class": c, "accuracy": a} for c, a in enumerate(per_class)],
        },
        notes=(
            f"{name} with {n_params / 1e6:.2f}M parameters (width {mcfg.dim}, depth {mcfg.depth}, "
            f"patch {mcfg.patch_size}) on {size}x{size} digits; FD uses {cfg.eval_samples} samples from the EMA "
            f"model, {cfg.sampler_steps}-step Heun, guidance scale {cfg.cfg_scale}; the real-data floor is the FD of "
            f"the {len(val)} held-out digits against the training set (fd_final_at_floor_n: the final model "
            f"on as many samples, the like-for-like comparison). The trained model is saved as last.safetensors."
        ),
    )


@dataclass(frozen=True)
class BackbonesDigitsConfig:
    backbones: tuple[str, ...] = ("dit", "uvit", "pixart", "mmdit")
    n_heads: int = 4
    image_size: int = 8
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    eval_samples: int = 1000
    sampler_steps: int = 18
    cfg_scale: float = 1.5
    cond_dropout_prob: float = 0.1

    def __post_init__(self):
        bad = [b for b in self.backbones if b not in BACKBONES]
        if bad or not self.backbones:
            raise ValueError(
                f"backbones must be a non-empty list of {', '.join(BACKBONES)}; unknown: {', '.join(bad)}"
            )
        _check_common(self)

    def for_backbone(self, family: str) -> DigitsDiffusionConfig:
        keep = {
            f: getattr(self, f)
            for f in DigitsDiffusionConfig.__dataclass_fields__
            if hasattr(self, f)
        }
        return DigitsDiffusionConfig(**{**keep, "backbone": family, "eval_every": 0})


@experiment(
    "core/backbones-digits",
    BackbonesDigitsConfig,
    presets={
        "quick": dict(
            n_heads=2,
            steps=600,
            batch_size=64,
            lr=2e-3,
            warmup_steps=50,
            eval_samples=300,
            sampler_steps=10,
        ),
        "full": dict(),
    },
    summary="DiT, U-ViT, PixArt-alpha and MMDiT trained with EDM on digits on the same budget (PixArt and MMDiT from captions): FD, accuracy, speed.",
)
def backbones_digits(cfg: BackbonesDigitsConfig, ctx: RunContext) -> Result:
    plt = _plt()
    size = cfg.image_size
    train, val, clf, clf_acc, fd_floor = _references(size)
    rows, grids = [], {}
    for fam in cfg.backbones:
        sub = cfg.for_backbone(fam)
        t0 = time.perf_counter()
        trainer, task = train_digits(
            sub, ctx, clf, eval_every=0, desc=f"core/backbones-digits [{fam}]", ckpt=False
        )
        train_s = time.perf_counter() - t0
        xs, ys = task.samples(
            trainer.eval_model(),
            10 * (-(-len(val) // 10)),
            size,
            cfg.sampler_steps,
            cfg.cfg_scale,
            seed=ctx.seed + 2,
        )
        acc = (clf.predict(xs) == ys).float().mean().item()
        net = trainer.model.net
        losses = [h["loss"] for h in trainer.history]
        rows.append(
            {
                "backbone": type(net).__name__,
                "conditioning": "captions" if task.text else "labels",
                "params": sum(p.numel() for p in net.parameters()),
                "final_loss": sum(losses[-max(len(losses) // 10, 1) :]) / max(len(losses) // 10, 1),
                "fd": trainer.evals[-1]["fd"],
                "fd_at_floor_n": clf.fd(xs[: len(val)], train.images),
                "accuracy": acc,
                "train_s": round(train_s, 1),
            }
        )
        grids[rows[-1]["backbone"]] = (xs, ys)
        ctx.log(f"{fam}: FD {rows[-1]['fd']:.2f}, accuracy {acc:.3f}, {train_s:.0f} s")

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    names = [r["backbone"] for r in rows]
    ax[0].bar(names, [r["fd"] for r in rows])
    ax[0].axhline(fd_floor, color="gray", ls="--", label="real held-out digits")
    ax[0].set(ylabel="FD (classifier features)", title=f"FD, {cfg.eval_samples} samples")
    ax[0].legend()
    ax[1].bar(names, [r["accuracy"] for r in rows])
    ax[1].set(ylabel="classifier accuracy", ylim=(0, 1.02), title="samples of the requested digit")
    fig.tight_layout()
    ctx.figure(fig, "comparison")

    n = 5
    fig, axes = plt.subplots(10, n * len(rows), figsize=(n * len(rows) * 0.5, 5.6))
    for b, name in enumerate(names):
        xs, ys = grids[name]
        _sample_grid([row[b * n : (b + 1) * n] for row in axes], xs, ys, n, label_rows=b == 0)
        axes[0][b * n + n // 2].set_title(name, fontsize=9)
    ctx.figure(fig, "samples")

    worst = min(rows, key=lambda r: r["accuracy"])
    claims = [
        Claim.check(
            "Every backbone learns to draw the requested digit (DiT, U-ViT from labels; PixArt-alpha, MMDiT from captions)",
            ", ".join(f"{r['backbone']} {r['accuracy']:.2f}" for r in rows),
            worst["accuracy"] >= 0.5,
            "threshold 0.5 = most samples recognised (chance is 0.1); same steps, LR and width for all, so this "
            "compares backbones at one untuned setting, not at their best",
        )
    ]
    return Result(
        metrics={
            f"{r['backbone']}_{k}": r[k] for r in rows for k in ("fd", "accuracy", "final_loss")
        }
        | {"fd_real_floor": fd_floor, "classifier_val_accuracy": clf_acc},
        claims=claims,
        tables={"backbones": rows},
        notes=f"Each backbone: width {cfg.n_heads} heads x 32, {cfg.steps} steps, batch {cfg.batch_size}, LR {cfg.lr}, "
        f"EMA; FD from {cfg.eval_samples} samples ({cfg.sampler_steps}-step Heun, guidance {cfg.cfg_scale}); "
        f"fd_at_floor_n on {len(val)} samples is comparable to the real-data floor {fd_floor:.2f}.",
    )
