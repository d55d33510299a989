"""``ddo/digits-diffusion`` and ``ddo/digits-ar``: DDO self-play on sklearn's 8x8 digits.

Both start from one base model trained here by maximum likelihood with 10 % label dropout
(classifier-free guidance) and cached by its settings:

* **diffusion**: core's class-conditional EDM DiT (:func:`~tenfold.core.tasks.train_digits`,
  core's ``core/dit-digits`` recipe); fakes drawn offline per round by the reference with
  the 18-step Heun sampler at guidance 1, one per real digit, with its label.
* **autoregressive**: core's LM over 65 tokens, ``[class token, 64 pixels]``: the digits
  have 17 grey levels, so a pixel is one of 17 symbols; the class token is ``17 + c`` or the
  null token 27 for the unconditional branch. Fakes are sampled online every step by the
  reference at temperature 1 with the real batch's labels, as in the paper's VAR trainer
  (or offline per round, ``--set fakes=offline``).

Each DDO seed fine-tunes the same base in self-play rounds (10 % of rows unconditional;
the best checkpoint of a round, by the guidance-free FD of ``val_samples`` samples drawn
with a validation seed, becomes the next reference; the reference itself is the first
candidate). Test metrics, guidance-free and at guidance ``cfg_scale``, on ``eval_samples``
samples (classes in turn) for each of ``draws`` sample seeds shared by every model (the
same noise, so differences are paired): FD, improved precision/recall and the classifier's
accuracy on the requested class, all in the core digits classifier's feature space against
the training digits. The cost of a round is measured from step times taken in the same run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import torch
from torch import Tensor, nn

from ...core import metrics as M
from ...core.experiment import Claim, Result, RunContext, experiment, two_se
from ...core.io import cached_state
from ...core.models import LM, LMConfig
from ...core.tasks import (
    DigitsDiffusionConfig,
    DigitsTask,
    digits_references,
    sample_grid,
    train_digits,
)
from ...core.train import StepContext, TrainConfig, Trainer
from ...core.validate import check_config
from ..api import DDOConfig, ddo_loss, sequence_log_prob
from ..selfplay import DiffusionFakes, SelfPlayConfig, self_play

__all__ = ["DigitsDDOConfig", "DigitsARConfig", "to_tokens", "to_images", "sample_tokens"]

NAMESPACE, VERSION = "ddo", 1
LEVELS, CLASSES = 17, 10  # grey levels of a pixel, digit classes
NULL_TOKEN = LEVELS + CLASSES  # the AR model's unconditional class token
VOCAB = NULL_TOKEN + 1
BASE_SEED = 0  # every DDO seed fine-tunes the same base


@dataclass(frozen=True)
class _DDORun:
    """What both digits experiments share: the base's label dropout, DDO and its scoring."""

    label_dropout: float = 0.1  # of the base (classifier-free guidance) and of DDO's rows
    alpha: float = 1.0
    beta: float = 0.05
    rounds: int = 2
    steps: int = 300
    lr: float = 1e-4
    batch_size: int = 64
    eval_every: int = 100
    fakes: str = "offline"
    cfg_scale: float = 1.5
    eval_samples: int = 1000
    val_samples: int = 500
    draws: int = 2
    seeds: tuple[int, ...] = (0, 1)
    _model_rules: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        check_config(
            self, label_dropout="[0,1)", alpha=">0", beta=">0", rounds="[1,20]", steps=">=1",
            lr=">0", batch_size="[1,1438]", eval_every=">=1", fakes=("offline", "online"),
            cfg_scale=">1", eval_samples=">=100", val_samples=">=100", draws="[1,10]",
            seeds=">=0 unique", pretrain_steps=">=1", pretrain_lr=">0",
            pretrain_batch="[1,1438]", **self._model_rules,
        )  # fmt: skip


@dataclass(frozen=True)
class DigitsDDOConfig(_DDORun):
    """``ddo/digits-diffusion``: the base DiT (core's ``core/dit-digits`` full recipe) and DDO."""

    lr: float = 2e-5  # (a first full run at 1e-4 only made the converged base worse)
    n_heads: int = 4  # DiT width = n_heads x 32
    pretrain_steps: int = 6000
    pretrain_batch: int = 128
    pretrain_lr: float = 1e-3
    sampler_steps: int = 18
    _model_rules: ClassVar[dict[str, str]] = dict(n_heads=">=1", sampler_steps=">=1")


@dataclass(frozen=True)
class DigitsARConfig(_DDORun):
    """``ddo/digits-ar``: the base LM over [class, 64 pixel tokens] and DDO (online fakes,
    as the paper's VAR trainer)."""

    steps: int = 200
    lr: float = 1e-5
    eval_every: int = 50
    fakes: str = "online"
    n_layer: int = 3
    n_heads: int = 3
    head_dim: int = 32
    pretrain_steps: int = 2000
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3
    _model_rules: ClassVar[dict[str, str]] = dict(n_layer=">=1", n_heads=">=1", head_dim=">=2")


# ----------------------------------------------------------------------------------------
# the autoregressive digits model


def to_tokens(images: Tensor, labels: Tensor) -> Tensor:
    """Digits (N, 1, 8, 8) in [-1, 1] and labels (N,) -> [class token, 64 pixels] (N, 65)."""
    px = ((images + 1) * 8).round().clamp(0, LEVELS - 1).long().flatten(1)  # (N, 64)
    return torch.cat([(LEVELS + labels.long())[:, None], px], 1)


def to_images(tokens: Tensor) -> Tensor:
    """[class, 64 pixels] (N, 65) -> images (N, 1, 8, 8) in [-1, 1]."""
    if tokens.ndim != 2 or tokens.shape[1] != 65:
        raise ValueError(f"expected tokens (N, 65), got {tuple(tokens.shape)}")
    px = tokens[:, 1:]
    if px.min() < 0 or px.max() >= LEVELS:
        raise ValueError(f"pixel tokens must lie in [0, {LEVELS}), got [{px.min()}, {px.max()}]")
    return (px.float() / 8 - 1).view(-1, 1, 8, 8)


@torch.no_grad()
def sample_tokens(
    lm: nn.Module, labels: Tensor, cfg_scale: float, generator: torch.Generator
) -> Tensor:
    """Digits of the classes ``labels`` (N,) from core's LM: plain sampling at temperature 1
    over the 17 pixel symbols (class tokens are never drawn at a pixel position), with
    classifier-free guidance ``logits_u + s (logits_c - logits_u)`` when ``s != 1`` (the
    unconditional branch gets the null class token) -> tokens (N, 65)."""
    guided = cfg_scale != 1.0
    idx = (LEVELS + labels.long())[:, None]  # (N, 1)
    step = torch.cat([idx, torch.full_like(idx, NULL_TOKEN)]) if guided else idx
    cache = lm.new_cache()
    for _ in range(64):
        out = lm(step, cache=cache)
        logits = (out[0] if isinstance(out, tuple) else out)[:, -1].float()  # (N or 2N, V)
        if guided:
            c, u = logits.chunk(2)
            logits = u + cfg_scale * (c - u)
        logits = logits[:, :LEVELS]
        nxt = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator).to(idx)
        idx = torch.cat([idx, nxt], 1)
        step = torch.cat([nxt, nxt]) if guided else nxt
    return idx


def _pixel_fakes(ref: nn.Module, like: Tensor, labels, generator: torch.Generator) -> Tensor:
    """The AR reference's fakes: each real row's class token kept, 64 pixels sampled."""
    return sample_tokens(ref, like[:, 0] - LEVELS, 1.0, generator)


def _ar_loss(label_dropout: float) -> Callable:
    """The AR model's maximum-likelihood loss_fn for core's Trainer (nats per pixel), with
    the class token of ``label_dropout`` of the rows replaced by the null token."""

    def loss(m, batch, ctx: StepContext):
        (t,) = batch
        t = t.clone()
        t[ctx.rand(t.shape[0]) < label_dropout, 0] = NULL_TOKEN
        return -sequence_log_prob(m, t).mean() / 64

    return loss


def _ar_base(cfg: DigitsARConfig, tokens: Tensor, progress: bool) -> LM:
    loss = _ar_loss(cfg.label_dropout)
    torch.manual_seed(BASE_SEED)
    model = LM(LMConfig(vocab_size=VOCAB, block_size=65, n_layer=cfg.n_layer,
                        n_heads=cfg.n_heads, head_dim=cfg.head_dim))  # fmt: skip
    spec = dict(kind="digits-ar", v=VERSION, seed=BASE_SEED, n_layer=cfg.n_layer,
                n_heads=cfg.n_heads, head_dim=cfg.head_dim, steps=cfg.pretrain_steps,
                batch=cfg.pretrain_batch, lr=cfg.pretrain_lr, drop=cfg.label_dropout)  # fmt: skip

    def build():
        tcfg = TrainConfig(steps=cfg.pretrain_steps, batch_size=cfg.pretrain_batch,
                           lr=cfg.pretrain_lr, warmup_steps=100, schedule="cosine",
                           ema_decay=0.999, seed=BASE_SEED, progress=progress,
                           desc="digits AR pre-training")  # fmt: skip
        tr = Trainer(model, loss, (tokens,), tcfg)
        tr.fit()
        return tr.eval_model().state_dict()

    model.load_state_dict(cached_state(NAMESPACE, spec, build, name="digits-ar",
                                       like=model.state_dict()))  # fmt: skip
    return model.eval()


def _dit_config(cfg: DigitsDDOConfig) -> DigitsDiffusionConfig:
    return DigitsDiffusionConfig(
        backbone="dit", n_heads=cfg.n_heads, steps=cfg.pretrain_steps,
        batch_size=cfg.pretrain_batch, lr=cfg.pretrain_lr, eval_every=0,
        sampler_steps=cfg.sampler_steps, cfg_scale=cfg.cfg_scale,
        cond_dropout_prob=cfg.label_dropout,
    )  # fmt: skip


def _dit_base(cfg: DigitsDDOConfig, clf, progress: bool) -> nn.Module:
    from ...core.diffusion import EDMPrecond
    from ...core.models import BACKBONES

    dcfg = _dit_config(cfg)
    torch.manual_seed(BASE_SEED)
    model = EDMPrecond(BACKBONES["dit"].model_cls(dcfg.model_config()), 0.5)
    spec = dict(kind="digits-dit", v=VERSION, seed=BASE_SEED, **dcfg.__dict__)

    def build():
        ctx = SimpleNamespace(seed=BASE_SEED, progress=progress, out_dir=None)
        trainer, _ = train_digits(dcfg, ctx, clf, 0, "digits DiT pre-training", ckpt=False)
        return trainer.eval_model().state_dict()

    model.load_state_dict(cached_state(NAMESPACE, spec, build, name="digits-dit",
                                       like=model.state_dict()))  # fmt: skip
    return model.eval()


def _median_step(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], n: int = 6) -> float:
    """Median wall time of one AdamW step of ``loss_fn`` on a copy of ``model``."""
    m = copy.deepcopy(model).train().requires_grad_(True)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-8)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = loss_fn(m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2]


# ----------------------------------------------------------------------------------------
# the experiment both families share


@dataclass
class _Family:
    name: str  # "diffusion" | "autoregressive"
    base: nn.Module
    sample: Callable[[nn.Module, Tensor, float, int], Tensor]  # model, labels, scale, seed
    real: Tensor | tuple[Tensor, Tensor]
    fakes: Callable
    null_label: int
    ddo_step: Callable[[nn.Module, nn.Module, DDOConfig], Tensor]  # model, ref -> a DDO loss
    train_loss: Callable  # the pre-training loss_fn(model, batch, ctx) of core's Trainer
    train_data: tuple[Tensor, ...]


def _mle_control(cfg, fam: _Family, metric, seed: int, progress: bool) -> tuple[nn.Module, int]:
    """The control DDO must beat: as many steps of continued maximum likelihood from the
    base, with DDO's batch size, learning rate and EMA, and the same best-checkpoint rule
    (the base itself the first candidate) -> the chosen model and its step."""
    model = copy.deepcopy(fam.base).train().requires_grad_(True)
    best = {"metric": float(metric(fam.base)), "step": 0, "state": fam.base.state_dict()}

    def eval_fn(m, step):
        v = float(metric(m))
        if v < best["metric"]:
            best.update(metric=v, step=step, state=copy.deepcopy(m.state_dict()))
        return {"metric": v}

    tcfg = TrainConfig(steps=cfg.steps * cfg.rounds, batch_size=cfg.batch_size, lr=cfg.lr,
                       ema_decay=0.99, eval_every=cfg.eval_every, seed=seed,
                       progress=progress, desc="max.-likelihood control")  # fmt: skip
    Trainer(model, fam.train_loss, fam.train_data, tcfg, eval_fn=eval_fn).fit()
    model.load_state_dict(best["state"])
    return model.eval(), best["step"]


def _run(cfg, ctx: RunContext, fam: _Family, clf, train, clf_acc, floor) -> Result:
    fr = clf.features(train.images).detach()
    labels = torch.arange(cfg.eval_samples) % CLASSES
    scales = (1.0, cfg.cfg_scale)

    @torch.no_grad()
    def score(model: nn.Module, scale: float, draw: int) -> tuple[dict[str, float], Tensor]:
        xs = fam.sample(model, labels, scale, 9_000 + draw).clamp(-1, 1)
        pr = M.precision_recall(fr, clf.features(xs))
        acc = float((clf.predict(xs) == labels).float().mean())
        return {"fd": clf.fd(xs, train.images), "precision": pr["precision"],
                "recall": pr["recall"], "class_acc": acc}, xs  # fmt: skip

    def evaluate(model, which, scales_now):
        out = {}
        for scale in scales_now:
            for d in range(cfg.draws):
                out[(scale, d)], xs = score(model, scale, d)
                if d == 0:
                    grids[(which, scale)] = xs
        return out

    grids: dict = {}
    base_scores = evaluate(fam.base, "base", scales)
    ddo = DDOConfig(alpha=cfg.alpha, beta=cfg.beta)
    vlabels = torch.arange(cfg.val_samples) % CLASSES
    scores: dict[tuple[int, int], dict] = {}  # (seed, round) -> {(scale, draw): metrics}
    rounds_rows = []
    fake_s = []
    control: dict[int, dict] = {}  # seed -> {(1.0, draw): metrics} of the MLE control
    control_steps: dict[int, int] = {}
    for seed in cfg.seeds:

        def metric(m, _seed=seed):  # guidance-free FD on validation-seed samples
            return clf.fd(fam.sample(m, vlabels, 1.0, 5_000 + _seed).clamp(-1, 1), train.images)

        ctl, ctl_step = _mle_control(cfg, fam, metric, seed, ctx.progress)
        control[seed] = evaluate(ctl, None, scales[:1])
        control_steps[seed] = ctl_step
        model = copy.deepcopy(fam.base).train().requires_grad_(True)
        for k in range(1, cfg.rounds + 1):  # one round more per call: the earlier ones resume
            sp = SelfPlayConfig(rounds=k, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                eval_every=cfg.eval_every, fakes=cfg.fakes,
                                label_dropout=cfg.label_dropout, seed=seed,
                                progress=ctx.progress)  # fmt: skip
            rec = self_play(model, fam.real, fam.fakes, metric, ddo, sp,
                            ctx.out_dir / f"{fam.name}-seed{seed}",
                            null_label=fam.null_label)[-1]  # fmt: skip
            model.eval()
            last = k == cfg.rounds
            scores[(seed, k)] = evaluate(model, f"seed{seed}" if last else None,
                                         scales if last else scales[:1])  # fmt: skip
            model.train()
            tail = rec.history[-max(1, cfg.steps // 5) :]
            fake_s.append(rec.fake_seconds)
            rounds_rows.append({
                "seed": seed, "round": k, "best_step": rec.best_step,
                "val_fd_ref": round(rec.base_metric, 3), "val_fd_best": round(rec.best_metric, 3),
                # every checkpoint's validation FD: how DDO moved, kept or not
                "val_fd_steps": " ".join(f"{e['step']}:{e['metric']:.2f}" for e in rec.evals),
                "disc_acc": round(sum(h["acc"] for h in tail) / len(tail), 4),
                "margin": round(sum(h["margin"] for h in tail) / len(tail), 4),
                "fake_s": round(rec.fake_seconds, 1), "train_s": round(rec.train_seconds, 1),
            })  # fmt: skip
    # the cost of a round against pre-training, from step times measured here
    pre_batch = tuple(t[: cfg.pretrain_batch] for t in fam.train_data)
    pre_ctx = StepContext(step=0, generator=torch.Generator().manual_seed(1))
    t_pre = _median_step(fam.base, lambda m: fam.train_loss(m, pre_batch, pre_ctx))
    ref = copy.deepcopy(fam.base).requires_grad_(False)
    t_ddo = _median_step(fam.base, lambda m: fam.ddo_step(m, ref, ddo))
    t_fake = sum(fake_s) / len(fake_s)
    t_online = 0.0
    if cfg.fakes == "online":  # the fakes are drawn inside the step: time them apart
        g = torch.Generator().manual_seed(0)
        like = fam.real if isinstance(fam.real, Tensor) else fam.real[0]
        t0 = time.perf_counter()
        fam.fakes(fam.base, like[: cfg.batch_size], None, g)
        t_online = time.perf_counter() - t0
    round_s = cfg.steps * (t_ddo + t_online) + t_fake
    pre_s = cfg.pretrain_steps * t_pre
    frac = round_s / pre_s

    table = []
    for (scale, d), s in sorted(base_scores.items()):
        table.append({"seed": "base", "round": 0, "guidance": scale, "draw": d, **s})
    for (seed, k), sc in sorted(scores.items()):
        for (scale, d), s in sorted(sc.items()):
            table.append({"seed": seed, "round": k, "guidance": scale, "draw": d, **s})
    controls = []  # the MLE control, apart: "round" would read as a DDO round
    for seed, sc in sorted(control.items()):
        for (scale, d), s in sorted(sc.items()):
            controls.append({"seed": seed, "steps": cfg.steps * cfg.rounds,
                             "best_step": control_steps[seed], "guidance": scale, "draw": d,
                             **s})  # fmt: skip

    def mean_of(key, k, scale):
        rows = [r for r in table if r["round"] == k and r["guidance"] == scale]
        return sum(r[key] for r in rows) / len(rows)

    R = cfg.rounds
    metrics = {"classifier_val_accuracy": clf_acc, "fd_real_floor_359": floor,
               "round_fraction": frac, "round_seconds": round_s, "pretrain_seconds": pre_s,
               "pretrain_step_s": t_pre, "ddo_step_s": t_ddo, "online_fakes_step_s": t_online,
               "fakes_per_round_s": t_fake}  # fmt: skip
    for k in (0, R):
        for scale in scales:
            for key in ("fd", "precision", "recall", "class_acc"):
                metrics[f"{key}.round{k}.cfg{scale:g}"] = mean_of(key, k, scale)
    claims = _claims(cfg, fam, base_scores, scores, control, frac, t_pre, t_ddo + t_online,
                     t_fake)  # fmt: skip
    metrics["fd.mle_control.cfg1"] = sum(r["fd"] for r in controls) / len(controls)
    figs = [_grid_figure(ctx, grids, cfg, fam.name), _curve_figure(ctx, cfg, table, floor)]
    notes = (
        f"{fam.name} digits model, base trained once (seed {BASE_SEED}) and fine-tuned by DDO "
        f"with seeds {list(cfg.seeds)}; metrics on {cfg.eval_samples} samples x {cfg.draws} "
        f"draws in the digits classifier's features against the 1438 training digits (FD is "
        f"biased up at small sample counts: the real-data floor {floor:.2f} is 359 held-out "
        "digits). Each round's best checkpoint is picked by the guidance-free FD of "
        f"{cfg.val_samples} samples drawn with other seeds."
    )
    return Result(metrics=metrics, claims=claims, figures=figs, notes=notes,
                  tables={"samples": table, "rounds": rounds_rows,
                          "mle_control": controls})  # fmt: skip


def _claims(cfg, fam, base_scores, scores, control, frac, t_pre, t_ddo, t_fake) -> list[Claim]:
    R, s = cfg.rounds, cfg.cfg_scale
    draws = range(cfg.draws)

    def diffs(base_scale, ddo_scale):  # paired by sample draw: one value per (seed, draw)
        return [base_scores[(base_scale, d)]["fd"] - scores[(seed, R)][(ddo_scale, d)]["fd"]
                for seed in cfg.seeds for d in draws]  # fmt: skip

    def rel(base_scale, ddo_scale):
        b = sum(base_scores[(base_scale, d)]["fd"] for d in draws) / cfg.draws
        v = diffs(base_scale, ddo_scale)
        return f"FD {b:.2f} -> {b - sum(v) / len(v):.2f} ({-100 * sum(v) / len(v) / b:+.0f} %)"

    def noise(*scales_):  # the FD's own sampling noise: the base's spread over the draws
        return max(two_se([base_scores[(sc, d)]["fd"] for d in draws]) for sc in scales_)

    where = (f"{len(cfg.seeds)} DDO seed(s) x {cfg.draws} sample draws of {cfg.eval_samples}, "
             f"after {R} round(s)")  # fmt: skip
    spread = (
        "the larger of 2 standard errors over DDO seeds x sample draws (paired by draw) and "
        "the base's own FD spread over the draws (2 standard errors)"
    )
    paper = ("EDM CIFAR-10 FID 1.79 -> 1.30" if fam.name == "diffusion"
             else "VAR-d16 without guidance FID 11.33 -> 3.12")  # fmt: skip
    return [
        Claim.judge(
            "fd-drops-unguided",
            f"DDO fine-tuning improves sample quality without guidance ({paper})",
            source="abstract", values=diffs(1.0, 1.0), margin=0.0, sense="above", noise=noise(1.0),
            unit="FD", noise_from=spread,
            measured=f"base minus DDO, guidance 1: {rel(1.0, 1.0)}; {where}",
        ),
        Claim.judge(
            "fd-drops-guided",
            "both guidance-free and guided FIDs improve",
            source="abstract", values=diffs(s, s), margin=0.0, sense="above", unit="FD", noise=noise(s),
            noise_from=spread, measured=f"base minus DDO, guidance {s:g}: {rel(s, s)}; {where}",
        ),
        Claim.judge(
            "unguided-ddo-beats-guided-base",
            f"guidance-free DDO matches or beats the guided base (guidance {s:g})",
            source="abstract", values=diffs(s, 1.0), margin=0.0, sense="above", unit="FD", noise=noise(1.0, s),
            noise_from=spread,
            measured=f"guided base minus guidance-free DDO: {rel(s, 1.0)}; {where}",
        ),
        Claim.judge(
            "ddo-beats-more-mle",
            "the gain comes from the discriminative objective, not from more training: DDO "
            "beats as many steps of continued maximum likelihood",
            source="ours", unit="FD", noise=noise(1.0), noise_from=spread,
            values=[control[seed][(1.0, d)]["fd"] - scores[(seed, R)][(1.0, d)]["fd"]
                    for seed in cfg.seeds for d in draws],
            margin=0.0, sense="above",
            measured=f"FD of the max.-likelihood control ({cfg.steps * R} steps, lr {cfg.lr:g}, "
            f"its best checkpoint) minus FD after DDO, guidance 1; {where}",
        ),
        Claim.judge(
            "round-under-1pct",
            "each self-play round costs under 1 % of pre-training",
            source="abstract", values=frac, margin=0.01, sense="below", noise=0.2 * frac,
            unit="of pre-training",
            measured=f"({cfg.steps} DDO steps x {t_ddo * 1e3:.0f} ms + {t_fake:.0f} s of "
            f"fakes) / ({cfg.pretrain_steps} pre-training steps x {t_pre * 1e3:.0f} ms)",
            noise_from="20 % of the value (step times are medians of 6 steps)",
        ),
    ]  # fmt: skip


def _grid_figure(ctx: RunContext, grids, cfg, name: str) -> str:
    from ...core.tasks.plotting import pyplot

    plt = pyplot()
    seed = f"seed{cfg.seeds[0]}"
    keys = [("base", 1.0), (seed, 1.0), ("base", cfg.cfg_scale), (seed, cfg.cfg_scale)]
    fig = plt.figure(figsize=(12, 3.6))
    for sf, (who, scale) in zip(fig.subfigures(1, 4), keys):
        xs = grids[(who, scale)]
        sample_grid(sf.subplots(10, 6), xs, torch.arange(len(xs)) % CLASSES, 6,
                    label_rows=who == "base" and scale == 1.0)  # fmt: skip
        what = "max. likelihood" if who == "base" else f"DDO, {cfg.rounds} round(s)"
        sf.suptitle(f"{what}, guidance {scale:g}", fontsize=9)
    fig.suptitle(f"{name} digits samples (sample draw 0)", fontsize=10, y=1.04)
    return ctx.figure(fig, "samples")


def _curve_figure(ctx: RunContext, cfg, table, floor: float) -> str:
    from ...core.tasks.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    base = [r["fd"] for r in table if r["round"] == 0 and r["guidance"] == 1.0]
    guided = [r["fd"] for r in table if r["round"] == 0 and r["guidance"] == cfg.cfg_scale]
    for seed in cfg.seeds:
        ks = list(range(cfg.rounds + 1))
        ys = [sum(base) / len(base)]
        for k in ks[1:]:
            v = [r["fd"] for r in table if r["seed"] == seed and r["round"] == k
                 and r["guidance"] == 1.0]  # fmt: skip
            ys.append(sum(v) / len(v))
        ax.plot(ks, ys, "o-", label=f"DDO seed {seed}, guidance 1")
    ax.axhline(sum(guided) / len(guided), color="C3", ls=":",
               label=f"base, guidance {cfg.cfg_scale:g}")  # fmt: skip
    ax.axhline(floor, color="gray", ls="--", label="real held-out digits (359)")
    ax.set(xlabel="self-play round", ylabel="FD (classifier features)", xticks=ks,
           title=f"FD of {cfg.eval_samples} samples per draw")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    return ctx.figure(fig, "fd_rounds")


# ----------------------------------------------------------------------------------------
# the two experiments

_SUMMARY = ("DDO self-play on a class-conditional {what} of the 8x8 digits: FD, precision/"
            "recall and class accuracy, guidance-free and guided, before and after 1-3 rounds; "
            "the compute of a round against pre-training.")  # fmt: skip


# (ddo/grid starts from this preset's base model)
DIFFUSION_QUICK = dict(
    n_heads=2, pretrain_steps=1200, pretrain_batch=64, pretrain_lr=2e-3, sampler_steps=10,
    lr=1e-4, rounds=1, steps=100, eval_every=50, eval_samples=300, val_samples=200, seeds=(0,),
)  # fmt: skip


@experiment(
    "ddo/digits-diffusion",
    DigitsDDOConfig,
    presets={
        "quick": DIFFUSION_QUICK,
        "full": {},
    },
    summary=_SUMMARY.format(what="EDM DiT"),
)
def digits_diffusion(cfg: DigitsDDOConfig, ctx: RunContext) -> Result:
    train, _, clf, clf_acc, floor = digits_references(8)
    base = _dit_base(cfg, clf, ctx.progress)
    task = DigitsTask("dit", cfg.label_dropout)

    def sample(model, labels, scale, seed):
        xs, _ = task.samples(model, len(labels), 8, cfg.sampler_steps, scale, seed)
        return xs

    x, y = train.images, train.labels
    g = torch.Generator().manual_seed(1)

    def ddo_step(m, ref, ddo):
        b = cfg.batch_size
        sigma = (torch.randn(b, generator=g) * ddo.P_std + ddo.P_mean).exp()
        return ddo_loss(m, ref, (x[:b], y[:b]), (x[b : 2 * b], y[:b]), ddo, sigma=sigma,
                        noise=torch.randn(b, 1, 8, 8, generator=g)).loss  # fmt: skip

    fam = _Family("diffusion", base, sample, (x, y), DiffusionFakes(cfg.sampler_steps), 10,
                  ddo_step, task.loss, (x, y))  # fmt: skip
    return _run(cfg, ctx, fam, clf, train, clf_acc, floor)


@experiment(
    "ddo/digits-ar",
    DigitsARConfig,
    presets={
        "quick": dict(
            n_layer=2,
            n_heads=2,
            pretrain_steps=800,
            rounds=1,
            steps=100,
            eval_every=50,
            eval_samples=300,
            val_samples=200,
            seeds=(0,),
        ),  # fmt: skip
        "full": {},
    },
    summary=_SUMMARY.format(what="autoregressive LM (64 tokens over 17 grey levels)"),
)
def digits_ar(cfg: DigitsARConfig, ctx: RunContext) -> Result:
    train, _, clf, clf_acc, floor = digits_references(8)
    tokens = to_tokens(train.images, train.labels)
    base = _ar_base(cfg, tokens, ctx.progress)

    def sample(model, labels, scale, seed):
        return to_images(sample_tokens(model, labels, scale, torch.Generator().manual_seed(seed)))

    b = cfg.batch_size

    def ddo_step(m, ref, ddo):
        return ddo_loss(m, ref, tokens[:b], tokens[b : 2 * b], ddo).loss

    fam = _Family("autoregressive", base, sample, tokens, _pixel_fakes, NULL_TOKEN, ddo_step,
                  _ar_loss(cfg.label_dropout), (tokens,))  # fmt: skip
    return _run(cfg, ctx, fam, clf, train, clf_acc, floor)
