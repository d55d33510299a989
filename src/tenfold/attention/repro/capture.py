"""Attention inputs for the accuracy experiment: Q, K, V and the real dO captured from
tenfold's own trained models (a DiT on the digits, the LM on the Python docs; both trained
once and cached), and synthetic inputs with the channel outliers of large models or the long,
diffuse attention of video models."""

from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from ...core.data import load_digits
from ...core.diffusion import EDMPrecond
from ...core.io import cached_state
from ...core.models import BACKBONES, set_attention_fn
from ...core.tasks.digits import DigitsTask
from ...core.tasks.lm import LMRunSpec, build_lm, lm_streams, pretrained_lm, val_batches
from ...core.train import TrainConfig, Trainer

POINT_VERSION = 1  # bump when what is captured (or how its models train) changes

SOURCE_NAMES = {
    "dit": "DiT on digits",
    "lm": "LM on Python docs",
    "outliers": "synthetic, outliers",
    "long": "synthetic, long diffuse",
}


class _Recorder:
    """An SDPA-signature kernel that records Q, K, V (and, after backward, dO) per call."""

    supports_gqa = False

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        rec = {"q": q.detach().clone(), "k": k.detach().clone(), "v": v.detach().clone()}
        rec["causal"] = is_causal
        self.calls.append(rec)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        if out.requires_grad:
            out.register_hook(lambda g, rec=rec: rec.__setitem__("do", g.detach().clone()))
        return out


def _dit(cfg, seed: int, progress: bool):
    bb = BACKBONES["dit"]
    mcfg = bb.config_cls(
        depth=cfg.dit_depth,
        n_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        patch_size=cfg.dit_patch,
        input_size=16,
        num_classes=10,
    )
    torch.manual_seed(seed)
    net = EDMPrecond(bb.model_cls(mcfg))
    task = DigitsTask("dit")
    train = load_digits("train", 16)

    def build():
        tcfg = TrainConfig(
            steps=cfg.dit_steps,
            batch_size=64,
            lr=1e-3,
            warmup_steps=max(1, cfg.dit_steps // 20),
            ema_decay=None,
            seed=seed,
            progress=progress,
            desc="DiT on digits (fp32)",
        )
        Trainer(net, task.loss, (train.images, train.labels), tcfg).fit()
        return net.state_dict()

    spec = dict(
        model="dit",
        depth=cfg.dit_depth,
        n_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        patch=cfg.dit_patch,
        steps=cfg.dit_steps,
        seed=seed,
        v=POINT_VERSION,
    )
    net.load_state_dict(cached_state("attention", spec, build, name="dit", like=net.state_dict()))
    return net, task, train


def capture_dit(cfg, seed: int, progress: bool) -> list[dict]:
    """Q, K, V, dO of every attention layer of the trained DiT on a batch of noised digits
    (sigmas spread over the EDM range), with dO from the (unweighted) denoising loss."""
    net, task, train = _dit(cfg, seed, progress)
    rec = _Recorder()
    set_attention_fn(net, rec)
    g = torch.Generator().manual_seed(seed + 7)
    idx = torch.randperm(len(train.images), generator=g)[: cfg.capture_batch]
    x0, y = train.images[idx], train.labels[idx]
    sigma = torch.exp(torch.linspace(-1.5, 1.0, len(idx)))  # (B,)
    noise = torch.randn(x0.shape, generator=g)
    out = net(x0 + sigma[:, None, None, None] * noise, sigma, y)
    ((out - x0) ** 2).mean().backward()
    set_attention_fn(net, None)
    return rec.calls


def capture_lm(cfg, seed: int, progress: bool) -> list[dict]:
    """Q, K, V, dO of every attention layer of the LM pretrained on the Python docs, on a
    validation batch, with dO from the next-token loss."""
    spec = _lm_spec(cfg, seed)
    base, _ = lm_streams(spec)
    model = build_lm(spec, base.vocab_size)
    model.load_state_dict(pretrained_lm(spec, base, "attention", POINT_VERSION, progress))
    x, t = val_batches(base.val, replace(spec, batch_size=cfg.capture_batch))[0]
    rec = _Recorder()
    set_attention_fn(model, rec)
    model(x, t)[1].backward()
    set_attention_fn(model, None)
    return rec.calls


def synthetic_outliers(cfg, seed: int) -> list[dict]:
    """Attention inputs with what large models show: queries that pick out a few keys (a
    peaked softmax), per-channel offsets of K (``outlier_scale``) and Q (a quarter of it),
    three outlier channels of K ``outlier_scale`` times the others, one of V; dO Gaussian."""
    g = torch.Generator().manual_seed(seed + 11)
    B, H, T, D = 1, cfg.n_heads, cfg.synthetic_tokens, cfg.head_dim
    k = torch.randn(B, H, T, D, generator=g)
    perm = torch.randint(0, T, (T,), generator=g)
    q = 2.0 * k[:, :, perm] + 0.7 * torch.randn(B, H, T, D, generator=g)
    out_ch = torch.randperm(D, generator=g)[:3]
    k[..., out_ch] *= cfg.outlier_scale  # outlier channels of K
    k += cfg.outlier_scale * torch.randn(1, H, 1, D, generator=g)  # K's channel offsets
    q += 0.25 * cfg.outlier_scale * torch.randn(1, H, 1, D, generator=g)  # and Q's
    v = torch.randn(B, H, T, D, generator=g)
    v[..., out_ch[:1]] *= cfg.outlier_scale
    do = torch.randn(B, H, T, D, generator=g)
    return [{"q": q, "k": k, "v": v, "do": do, "causal": False}]


def synthetic_long(cfg, seed: int) -> list[dict]:
    """A long sequence with diffuse attention, like a video model's: Gaussian Q, K with
    scores of standard deviation ``long_score_std`` over ``long_tokens`` keys, so most of
    the probability sits in keys far below the row max (where P's FP4 scales live)."""
    g = torch.Generator().manual_seed(seed + 13)
    B, H, T, D = 1, 2, cfg.long_tokens, cfg.head_dim
    q = cfg.long_score_std * torch.randn(B, H, T, D, generator=g)
    k = torch.randn(B, H, T, D, generator=g)
    v = torch.randn(B, H, T, D, generator=g)
    do = torch.randn(B, H, T, D, generator=g)
    return [{"q": q, "k": k, "v": v, "do": do, "causal": False}]


PLUG_VARIANTS = ("fp4_nvfp4", "qk_int8_pv_fp8")


@torch.no_grad()
def _per_sample(model, loss_fn, variants) -> dict[str, list[float]]:
    """``loss_fn(model) -> (B,)`` losses with the model's own attention (SDPA, "exact") and
    with each variant plugged in through the public :func:`tenfold.attention.apply_`."""
    from ..api import AttentionConfig, apply_, remove_

    model.eval()
    out = {"exact": loss_fn(model).tolist()}
    for v in variants:
        apply_(model, AttentionConfig(variant=v, backend="reference", on_unsupported="error"))
        try:
            out[v] = loss_fn(model).tolist()
        finally:
            remove_(model)
    return out


def plug_in_losses(cfg, seed: int, progress: bool, variants=PLUG_VARIANTS) -> dict:
    """End-to-end, the plug-and-play test: per-sample losses of the trained DiT (denoising
    MSE on ``plug_samples`` noised held-out digits, sigmas spread over the EDM range) and
    of the LM (next-token loss of ``plug_samples`` validation sequences), with SDPA and with
    each low-bit variant swapped in -> {source: {"exact" | variant: [loss per sample]}}."""
    out = {}
    n = cfg.plug_samples
    if "dit" in cfg.sources:
        net, _, _ = _dit(cfg, seed, progress)
        val = load_digits("val", 16)
        g = torch.Generator().manual_seed(seed + 17)
        idx = torch.randperm(len(val.images), generator=g)[:n]
        x0, y = val.images[idx], val.labels[idx]
        sigma = torch.exp(torch.linspace(-1.5, 1.0, len(idx)))  # (n,)
        xn = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g)

        def dit_loss(m):
            return ((m(xn, sigma, y) - x0) ** 2).flatten(1).mean(1)  # (n,)

        out["dit"] = _per_sample(net, dit_loss, variants)
    if "lm" in cfg.sources:
        spec = _lm_spec(cfg, seed)
        base, _ = lm_streams(spec)
        model = build_lm(spec, base.vocab_size)
        model.load_state_dict(pretrained_lm(spec, base, "attention", POINT_VERSION, progress))
        x, t = val_batches(base.val, replace(spec, batch_size=n))[0]

        def lm_loss(m):
            logits = m(x)[0]  # (n, T, V)
            return F.cross_entropy(logits.transpose(1, 2), t, reduction="none").mean(1)

        out["lm"] = _per_sample(model, lm_loss, variants)
    return out


def _lm_spec(cfg, seed: int) -> LMRunSpec:
    """The LM whose attention is captured: pretrained ``lm_steps`` steps (no run after)."""
    return LMRunSpec(
        corpus=cfg.corpus,
        vocab_size=cfg.vocab_size,
        block_size=cfg.lm_context,
        n_layer=cfg.lm_layers,
        n_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        mlp="swiglu",
        batch_size=16,
        lr=3e-3,
        pretrain_steps=cfg.lm_steps,
        seed=seed,
        steps=0,
        eval_every=0,
        eval_batches=1,
    )


def capture_sources(cfg, ctx) -> tuple[dict[str, list[dict]], float]:
    """The inputs of every source in ``cfg.sources`` (name -> list of per-layer calls with
    q, k, v, do, causal) and the seconds it took."""
    t0 = time.perf_counter()
    srcs: dict[str, list[dict]] = {}
    if "dit" in cfg.sources:
        ctx.log("training (or loading) the DiT on digits and capturing its attention")
        srcs["dit"] = capture_dit(cfg, ctx.seed, ctx.progress)
    if "lm" in cfg.sources:
        ctx.log("pretraining (or loading) the LM on the Python docs and capturing its attention")
        srcs["lm"] = capture_lm(cfg, ctx.seed, ctx.progress)
    if "outliers" in cfg.sources:
        srcs["outliers"] = synthetic_outliers(cfg, ctx.seed)
    if "long" in cfg.sources:
        srcs["long"] = synthetic_long(cfg, ctx.seed)
    return srcs, time.perf_counter() - t0
