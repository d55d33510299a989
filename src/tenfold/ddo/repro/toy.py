"""``ddo/toy``: DDO on a 5x5 grid of tight 2-D Gaussians, for both model families.

A deliberately small EDM denoiser (a residual MLP) and a small autoregressive model of two
tokens (the point's x and y bins, core's LM) are trained by maximum likelihood; at that
capacity both spread mass between the modes. Each is then fine-tuned with DDO in self-play
rounds (offline fakes for diffusion, online fakes for AR), the best checkpoint of a round
chosen by MMD to validation points. Test metrics: the share of samples off every mode
(further than 4 std from each mean), precision/recall (k-NN manifolds), MMD, the mean true
log-density of the samples, and the held-out NLL (diffusion: the probability-flow ODE with
exact divergence; AR: the bins' NLL with uniform dequantization, in nats per point).
Pre-training is cached by its settings; every seed retrains both base models.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...core import metrics as M
from ...core.data import GaussianMixture2D
from ...core.diffusion import EDMConfig, EDMPrecond, edm_loss, heun_sample, ode_log_likelihood
from ...core.experiment import Claim, Result, RunContext, binomial_noise, experiment
from ...core.io import cached_state
from ...core.models import LM, LMConfig, MLPDenoiser, MLPDenoiserConfig
from ...core.train import TrainConfig, Trainer
from ...core.validate import check_config
from ..api import DDOConfig, sequence_log_prob
from ..selfplay import DiffusionFakes, SelfPlayConfig, TokenFakes, self_play

NAMESPACE, VERSION = "ddo", 2
LO, HI = -3.0, 3.0  # the AR model's bins cover [LO, HI]^2


@dataclass(frozen=True)
class ToyConfig:
    n_modes: int = 25
    radius: float = 2.0
    std: float = 0.1
    n_train: int = 8192
    n_val: int = 2048
    n_test: int = 4096
    # diffusion: a small residual MLP denoiser
    width: int = 128
    depth: int = 3
    pretrain_steps: int = 3000
    pretrain_lr: float = 2e-3
    sampler_steps: int = 18
    nll_steps: int = 128
    # autoregressive: 2 tokens of `bins` levels after a BOS, a small core LM
    bins: int = 256
    ar_layers: int = 1
    ar_heads: int = 1
    ar_head_dim: int = 4
    ar_pretrain_steps: int = 800
    ar_pretrain_lr: float = 3e-3
    # DDO
    alpha: float = 1.0
    beta: float = 1.0
    ar_beta: float = 1.0
    rounds: int = 3
    steps: int = 800
    lr: float = 1e-3
    ar_lr: float = 1e-3
    batch_size: int = 256
    eval_every: int = 100
    families: tuple[str, ...] = ("diffusion", "ar")
    seeds: tuple[int, ...] = (0, 1, 2)
    nll_margin: float = 0.25  # nats per point: what "a small cost in NLL" is allowed

    def __post_init__(self):
        check_config(
            self, n_modes=">=1", radius=">0", std=">0", n_train=">=256", n_val=">=64",
            n_test=">=64", width=">=1", depth=">=1", pretrain_steps=">=1", pretrain_lr=">0",
            sampler_steps=">=1", nll_steps=">=1", bins="[4,4096]", ar_layers=">=1",
            ar_heads=">=1", ar_head_dim=">=2", ar_pretrain_steps=">=1", ar_pretrain_lr=">0",
            alpha=">0", beta=">0", ar_beta=">0", rounds="[1,20]", steps=">=1", lr=">0",
            ar_lr=">0", batch_size=">=1", eval_every=">=1",
            families={"diffusion", "ar"}, seeds=">=0 unique", nll_margin=">0",
        )  # fmt: skip


def _data(cfg: ToyConfig, seed: int):
    gm = GaussianMixture2D(cfg.n_modes, cfg.radius, cfg.std, layout="grid")
    g = torch.Generator().manual_seed(10_000 + seed)
    return gm, gm.sample(cfg.n_train, g)[0], gm.sample(cfg.n_val, g)[0], gm.sample(cfg.n_test, g)[0]


# ------------------------------------------------------------------ diffusion
def _denoiser(cfg: ToyConfig) -> nn.Module:
    return EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=cfg.width, depth=cfg.depth)))


def _cached_base(model: nn.Module, spec: dict, loss, data, steps, lr, seed, progress, desc):
    """``model`` trained by maximum likelihood (EMA weights), once per ``spec``, then cached."""

    def build() -> dict[str, Tensor]:
        tcfg = TrainConfig(steps=steps, batch_size=256, lr=lr, warmup_steps=100,
                           ema_decay=0.999, schedule="cosine", seed=seed, progress=progress,
                           desc=desc)  # fmt: skip
        trainer = Trainer(model, loss, data, tcfg)
        trainer.fit()
        return trainer.eval_model().state_dict()

    model.load_state_dict(
        cached_state(NAMESPACE, spec, build, name=spec["kind"], like=model.state_dict())
    )
    return model


def _base_diffusion(cfg: ToyConfig, xtr: Tensor, seed: int, progress: bool) -> nn.Module:
    edm = EDMConfig()

    def loss(m, batch, ctx):
        (x,) = batch
        sigma = (ctx.randn(x.shape[0]) * edm.P_std + edm.P_mean).exp()
        return edm_loss(m, x, None, edm, sigma=sigma, noise=ctx.randn(*x.shape)).mean()

    torch.manual_seed(seed)
    model = _denoiser(cfg)
    spec = dict(kind="toy-diffusion", v=VERSION, seed=seed, width=cfg.width, depth=cfg.depth,
                steps=cfg.pretrain_steps, lr=cfg.pretrain_lr, n_modes=cfg.n_modes,
                radius=cfg.radius, std=cfg.std, n=cfg.n_train)  # fmt: skip
    return _cached_base(model, spec, loss, (xtr,), cfg.pretrain_steps, cfg.pretrain_lr, seed,
                        progress, "toy diffusion pre-training")  # fmt: skip


def _diffusion_samples(model: nn.Module, cfg: ToyConfig, n: int, seed: int) -> Tensor:
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return heun_sample(model, noise, None, cfg.sampler_steps)


def _diffusion_nll(model: nn.Module, cfg: ToyConfig, x: Tensor) -> Tensor:
    return -ode_log_likelihood(model, x, num_steps=cfg.nll_steps)  # (n,) nats


# ------------------------------------------------------------------ autoregressive
def _width(cfg: ToyConfig) -> float:
    return (HI - LO) / cfg.bins


def _tokens(cfg: ToyConfig, x: Tensor) -> Tensor:
    """Points (n, 2) -> [BOS, x bin, y bin] (n, 3); BOS is token ``bins``."""
    b = ((x - LO) / _width(cfg)).floor().clamp(0, cfg.bins - 1).long()  # (n, 2)
    return torch.cat([torch.full((len(x), 1), cfg.bins), b], 1)


def _points(cfg: ToyConfig, tokens: Tensor, seed: int) -> Tensor:
    """Tokens -> points: a uniform draw inside each bin (the dequantization of the NLL)."""
    u = torch.rand(
        len(tokens), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return (LO + (tokens[:, 1:].double() + u) * _width(cfg)).float()


def _lm(cfg: ToyConfig) -> LM:
    return LM(LMConfig(vocab_size=cfg.bins + 1, block_size=3, n_layer=cfg.ar_layers,
                       n_heads=cfg.ar_heads, head_dim=cfg.ar_head_dim))  # fmt: skip


def _base_ar(cfg: ToyConfig, xtr: Tensor, seed: int, progress: bool) -> LM:
    def loss(m, batch, ctx):
        (t,) = batch
        return -sequence_log_prob(m, t).mean() / 2

    torch.manual_seed(seed)
    model = _lm(cfg)
    spec = dict(kind="toy-ar", v=VERSION, seed=seed, bins=cfg.bins, layers=cfg.ar_layers,
                heads=cfg.ar_heads, head_dim=cfg.ar_head_dim, steps=cfg.ar_pretrain_steps,
                lr=cfg.ar_pretrain_lr, n_modes=cfg.n_modes, radius=cfg.radius, std=cfg.std,
                n=cfg.n_train)  # fmt: skip
    return _cached_base(model, spec, loss, (_tokens(cfg, xtr),), cfg.ar_pretrain_steps,
                        cfg.ar_pretrain_lr, seed, progress, "toy AR pre-training")  # fmt: skip


@torch.no_grad()
def _ar_samples(model: LM, cfg: ToyConfig, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    bos = torch.full((n, 3), cfg.bins)
    return _points(cfg, TokenFakes(1)(model, bos, None, g), seed + 1)


@torch.no_grad()
def _ar_nll(model: LM, cfg: ToyConfig, x: Tensor) -> Tensor:
    """-log of the dequantized density: -log p(bins) + 2 log(bin width) -> (n,) nats."""
    return -sequence_log_prob(model, _tokens(cfg, x)).double() + 2 * math.log(_width(cfg))


# ------------------------------------------------------------------ metrics
def _scores(gm, xs: Tensor, xte: Tensor, nll: Tensor, off: Tensor, std: float) -> dict:
    pr = M.precision_recall(xte, xs)
    return {
        "off_mode": off.double().mean().item(),
        "precision": pr["precision"],
        "recall": pr["recall"],
        "mmd": M.mmd(xte, xs, bandwidth=2 * std),
        "log_density": float(gm.log_prob(xs.double()).mean()),
        "nll": float(nll.mean()),
    }


def _family(fam: str, cfg: ToyConfig, ctx: RunContext, seed: int):
    """Base and DDO rounds of one family on one seed -> (rows, per-point NLLs, samples)."""
    gm, xtr, xva, xte = _data(cfg, seed)
    n_eval = min(cfg.n_test, 4096)
    if fam == "diffusion":
        base = _base_diffusion(cfg, xtr, seed, ctx.progress)
        sample = lambda m, s: _diffusion_samples(m, cfg, n_eval, s)  # noqa: E731
        nll = lambda m: _diffusion_nll(m, cfg, xte)  # noqa: E731
        real, fakes = xtr, DiffusionFakes(cfg.sampler_steps)
        sp = dict(lr=cfg.lr, fakes="offline")
        beta = cfg.beta
    else:
        base = _base_ar(cfg, xtr, seed, ctx.progress)
        sample = lambda m, s: _ar_samples(m, cfg, n_eval, s)  # noqa: E731
        nll = lambda m: _ar_nll(m, cfg, xte)  # noqa: E731
        real, fakes = _tokens(cfg, xtr), TokenFakes(1)
        sp = dict(lr=cfg.ar_lr, fakes="online")
        beta = cfg.ar_beta

    def metric(m: nn.Module) -> float:  # validation: MMD of samples to held-out points
        return M.mmd(xva, sample(m, 7_000 + seed)[: len(xva)], bandwidth=2 * cfg.std)

    nlls, samples, off = {}, {}, {}

    def evaluate(k: int, m: nn.Module) -> dict:  # test samples of round k (0: the base)
        xs = samples[k] = sample(m, 9_000 + seed)
        nlls[k] = nll(m)
        off[k] = M.off_mode_mask(xs, gm.means, 4 * cfg.std)
        return {"family": fam, "seed": seed, "round": k,
                **_scores(gm, xs, xte, nlls[k], off[k], cfg.std)}  # fmt: skip

    rows = [evaluate(0, base)]
    model = copy.deepcopy(base).train().requires_grad_(True)
    spc = SelfPlayConfig(rounds=1, steps=cfg.steps, batch_size=cfg.batch_size,
                         eval_every=cfg.eval_every, seed=seed, progress=ctx.progress, **sp)  # fmt: skip
    ddo = DDOConfig(alpha=cfg.alpha, beta=beta)
    for k in range(1, cfg.rounds + 1):
        spc = SelfPlayConfig(**{**spc.__dict__, "rounds": k})
        recs = self_play(model, real, fakes, metric, ddo, spc, ctx.out_dir / f"{fam}-seed{seed}")
        rec = recs[-1]
        hist = rec.history[-max(1, cfg.steps // 10) :]
        rows.append({
            **evaluate(k, model.eval()), "best_step": rec.best_step, "disc_acc": sum(h["acc"] for h in hist) / len(hist),
            "margin": sum(h["margin"] for h in hist) / len(hist),
            "seconds": rec.train_seconds + rec.fake_seconds,
        })  # fmt: skip
        model.train()
    return rows, {"nll": nlls, "off": off}, samples, gm, xte


def _scatter(ctx: RunContext, panels) -> str:
    from ...core.tasks.plotting import pyplot

    plt = pyplot()
    fams = sorted({f for f, _, _ in panels}, key=["diffusion", "ar"].index)
    cols = max(sum(1 for f, _, _ in panels if f == fam) for fam in fams)
    fig, axes = plt.subplots(len(fams), cols, figsize=(3.2 * cols, 3.2 * len(fams)), squeeze=False)
    for i, fam in enumerate(fams):
        for j, (_, title, pts) in enumerate([p for p in panels if p[0] == fam]):
            a = axes[i][j]
            a.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
            a.set_xlim(LO, HI)
            a.set_ylim(LO, HI)
            a.set_aspect("equal")
            a.set_title(f"{fam}: {title}", fontsize=9)
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    return ctx.figure(fig, "scatter")


@experiment(
    "ddo/toy",
    ToyConfig,
    presets={
        "quick": dict(
            n_train=4096,
            n_val=1024,
            pretrain_steps=1500,
            rounds=1,
            steps=400,
            nll_steps=64,
            seeds=(0,),
        ),  # fmt: skip
        "full": {},
    },
    summary="DDO on a 5x5 grid of tight Gaussians, for a small EDM denoiser and a 2-token AR model: off-mode share, precision/recall, MMD and held-out NLL before and after self-play rounds; scatter plots.",
)
def toy(cfg: ToyConfig, ctx: RunContext) -> Result:
    rows, claims, panels = [], [], []
    for fam in cfg.families:
        per_seed = []
        for seed in cfg.seeds:
            r, nlls, samples, gm, xte = _family(fam, cfg, ctx, seed)
            rows += r
            per_seed.append((r, nlls))
            if seed == cfg.seeds[0]:
                panels.append((fam, "data", xte[: len(samples[0])]))
                panels.append((fam, "max. likelihood", samples[0]))
                panels.append((fam, f"DDO, round {cfg.rounds}", samples[cfg.rounds]))
        claims += _claims(fam, cfg, per_seed)
    metrics = {}
    for fam in cfg.families:
        for k in (0, cfg.rounds):
            sel = [r for r in rows if r["family"] == fam and r["round"] == k]
            for key in ("off_mode", "precision", "recall", "nll", "mmd", "log_density"):
                metrics[f"{fam}.round{k}.{key}"] = sum(r[key] for r in sel) / len(sel)
    fig = _scatter(ctx, panels)
    return Result(metrics=metrics, claims=claims, tables={"toy": rows}, figures=[fig],
                  notes=f"best checkpoint of each round by MMD to {cfg.n_val} validation points")  # fmt: skip


def _paired(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean of the per-sample difference a - b and two standard errors of it."""
    d = (a.double() - b.double()).reshape(-1)
    return float(d.mean()), 2 * float(d.std()) / math.sqrt(len(d))


def _claims(fam: str, cfg: ToyConfig, per_seed) -> list[Claim]:
    R = cfg.rounds
    base = [r[0] for r, _ in per_seed]
    last = [r[R] for r, _ in per_seed]
    n = min(cfg.n_test, 4096)
    S = len(per_seed)
    # off-mode: base and DDO are sampled from the same noise, so the per-sample paired
    # difference of the off-mode indicator gives the noise; NLL: paired per test point
    off = [_paired(v["off"][0], v["off"][R]) for _, v in per_seed]
    dn = [_paired(v["nll"][R], v["nll"][0]) for _, v in per_seed]
    prec = [a["precision"] - b["precision"] for b, a in zip(base, last)]
    prec_noise = sum(
        math.hypot(binomial_noise(b["precision"], n), binomial_noise(a["precision"], n))
        for b, a in zip(base, last)
    ) / S / math.sqrt(S)  # fmt: skip
    where = f"{fam}, {S} seed(s), {n} test samples, after {R} round(s)"
    return [
        Claim.judge(
            f"{fam}.off-mode-down",
            "DDO moves mass onto the modes: the share of samples off every mode (farther "
            "than 4 std from each mean) falls (our test of the abstract's mode-covering "
            "argument, on a toy where FD cannot see it)",
            source="ours", values=[e for e, _ in off], margin=0.0, sense="above",
            noise=sum(se for _, se in off) / S / math.sqrt(S), unit="share", measured=where,
            noise_from="two standard errors of the per-sample paired difference (the same "
            "sampling noise for both models)",
        ),
        Claim.judge(
            f"{fam}.precision-up",
            "DDO raises precision (the share of samples inside the data's k-NN manifold)",
            source="ours", values=prec, margin=0.0, sense="above", noise=prec_noise,
            unit="share", measured=where,
            noise_from="two binomial standard errors of each precision, combined",
        ),
        Claim.judge(
            f"{fam}.nll-cost-small",
            f"the held-out NLL rises by less than {cfg.nll_margin} nats per point (a small "
            "cost in likelihood)",
            source="ours", values=[e for e, _ in dn], margin=cfg.nll_margin, sense="below",
            noise=sum(se for _, se in dn) / S / math.sqrt(S), unit="nats",
            measured=f"{where}; NLL of round {R} minus the base, per held-out point",
            noise_from="two standard errors of the per-point paired NLL difference",
        ),
    ]  # fmt: skip
