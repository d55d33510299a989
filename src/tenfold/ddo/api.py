"""The DDO objective (arXiv 2503.01103): a GAN-like loss whose discriminator is the
log-likelihood ratio r(x) = log p_theta(x) - log p_ref(x) of the model being tuned to a
frozen reference, so no discriminator network is trained.

    L = [ E_real softplus(-beta r) + alpha E_fake softplus(beta r) ] / max(alpha, 1)

(-log sigmoid(z) = softplus(-z)). The fakes are samples of the reference. Rows trained
unconditionally (their label dropped for classifier-free guidance) count as real only, with
weight max(alpha, 1), as in NVlabs/DDO's VAR trainer.

* Autoregressive models (:func:`sequence_log_prob`): log p(x) is the sum of the per-token
  log-probabilities of the scored tokens; real and fake share one forward pass per model.
* EDM diffusion models (:func:`diffusion_log_ratio`): r is the denoising-loss surrogate
  -w(sigma) (||D_theta(x_s) - x||^2 - ||D_ref(x_s) - x||^2), summed over dimensions, with
  one (sigma, noise) shared by the real and the fake row and by both models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.diffusion import edm_weight
from ..core.validate import check_config, check_tensor

__all__ = [
    "DDOConfig",
    "DDOOutput",
    "check_reference",
    "ddo_loss",
    "ddo_objective",
    "diffusion_log_ratio",
    "sequence_log_prob",
]


@dataclass(frozen=True)
class DDOConfig:
    """The objective's settings. ``alpha`` weighs the fake term, ``beta`` scales the
    likelihood ratio inside the logistic loss (small for diffusion, whose surrogate r sums
    over every dimension); ``normalize`` divides by max(alpha, 1). The diffusion surrogate
    draws ln(sigma) ~ N(P_mean, P_std^2) (the paper's later EDM variants: -0.4, 1.0)."""

    alpha: float = 1.0
    beta: float = 0.05
    normalize: bool = True
    P_mean: float = -0.4
    P_std: float = 1.0
    sigma_data: float = 0.5

    def __post_init__(self):
        check_config(self, alpha=">0", beta=">0", P_std=">0", sigma_data=">0")


class DDOOutput(NamedTuple):
    """``loss`` (scalar), the ratios ``r_real`` and ``r_fake`` (B,), and the implicit
    discriminator's ``accuracy`` (share of conditional rows with r_real > r_fake) and
    ``margin`` (mean r_real - r_fake over them)."""

    loss: Tensor
    r_real: Tensor
    r_fake: Tensor
    accuracy: Tensor
    margin: Tensor


def ddo_objective(
    r_real: Tensor,
    r_fake: Tensor,
    config: DDOConfig,
    uncond: Tensor | None = None,
) -> Tensor:
    """The DDO loss from the log-likelihood ratios of paired real and fake rows (B,).

    ``uncond`` (B,) bool marks rows trained without their label: weight max(alpha, 1) on
    the real term and none on the fake term."""
    check_tensor("r_real", r_real, ndim=1, floating=True)
    check_tensor("r_fake", r_fake, ndim=1, floating=True)
    if r_real.shape != r_fake.shape:
        raise ValueError(
            f"r_real {tuple(r_real.shape)} and r_fake {tuple(r_fake.shape)} must pair row by row"
        )
    a, b = config.alpha, config.beta
    w_real = torch.ones_like(r_real)
    w_fake = torch.ones_like(r_fake)
    if uncond is not None:
        if uncond.shape != r_real.shape or uncond.dtype != torch.bool:
            raise ValueError(
                f"uncond must be a bool mask of shape {tuple(r_real.shape)}, got "
                f"{uncond.dtype} {tuple(uncond.shape)}"
            )
        w_real = torch.where(uncond, torch.full_like(w_real, max(a, 1.0)), w_real)
        w_fake = torch.where(uncond, torch.zeros_like(w_fake), w_fake)
    loss = (w_real * F.softplus(-b * r_real)).mean() + a * (w_fake * F.softplus(b * r_fake)).mean()
    return loss / max(a, 1.0) if config.normalize else loss


def check_reference(model: nn.Module, ref: nn.Module) -> None:
    """The reference must be the same architecture as the model: same class, same
    parameter names and shapes (so the same vocabulary for a language model)."""
    if type(model) is not type(ref):
        raise ValueError(
            f"the reference is a {type(ref).__name__}, the model a {type(model).__name__}: "
            "DDO needs a reference of the model's own architecture (a frozen copy of it)"
        )
    va = getattr(getattr(model, "config", None), "vocab_size", None)
    vb = getattr(getattr(ref, "config", None), "vocab_size", None)
    if va != vb:
        raise ValueError(
            f"the reference's vocabulary has {vb} tokens, the model's {va}: DDO compares "
            "log-probabilities of the same tokens, so both need the same vocabulary"
        )
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        k = diff[0]
        raise ValueError(
            f"the reference does not match the model's architecture: {k} is "
            f"{theirs.get(k, 'missing')} in the reference, {mine.get(k, 'missing')} in the model"
            + (f" ({len(diff)} tensors differ)" if len(diff) > 1 else "")
        )


def _logits(out) -> Tensor:
    """A module's logits: the tensor itself, or the first item of a (logits, loss) tuple."""
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise ValueError(
            "an autoregressive model must return logits (B, T, V) or a (logits, ...) tuple, "
            f"got {type(logits).__name__}"
            + (f" of shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else "")
        )
    return logits


def sequence_log_prob(
    model: nn.Module, tokens: Tensor, mask: Tensor | None = None, prompt_len: int = 1
) -> Tensor:
    """log p(x) of token sequences -> (B,), float32: the sum over scored positions of
    log_softmax(model(tokens[:, :-1]))[true token].

    Token ``j`` is scored when ``j >= prompt_len`` (the first ``prompt_len`` tokens -- a BOS
    or a class token -- condition and are not scored) and ``mask[:, j]`` is true (padding is
    False). ``model(idx)`` returns logits (B, T, V) or a (logits, ...) tuple, as core's LM."""
    check_tensor("tokens", tokens, ndim=2, dtypes=(torch.int64, torch.int32))
    B, L = tokens.shape
    if not 1 <= prompt_len < L:
        raise ValueError(
            f"prompt_len must be in [1, {L - 1}] for sequences of {L}, got {prompt_len}"
        )
    lo, hi = int(tokens.min()), int(tokens.max())

    def check_range(V):
        if lo < 0 or hi >= V:
            raise ValueError(
                f"token ids must lie in [0, {V}) (the model's vocabulary), got {lo}..{hi}"
            )

    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int):  # before the forward pass, whose embedding would fail first
        check_range(vocab)
    logits = _logits(model(tokens[:, :-1]))  # (B, L-1, V)
    V = logits.shape[-1]
    if logits.shape[:2] != (B, L - 1):
        raise ValueError(f"the model returned logits {tuple(logits.shape)} for input {(B, L - 1)}")
    check_range(V)
    logp = logits.float().log_softmax(-1)  # (B, L-1, V)
    tok = logp.gather(-1, tokens[:, 1:, None].long())[..., 0]  # (B, L-1): log p(token j | < j)
    scored = torch.arange(1, L, device=tokens.device) >= prompt_len  # (L-1,)
    keep = scored.expand(B, L - 1)
    if mask is not None:
        if mask.shape != tokens.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of the tokens' shape {tuple(tokens.shape)}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        keep = keep & mask[:, 1:]
    return (tok * keep).sum(1)  # (B,)


def diffusion_log_ratio(
    model: nn.Module,
    ref: nn.Module,
    x: Tensor,
    sigma: Tensor,
    noise: Tensor,
    y: Tensor | None = None,
    sigma_data: float = 0.5,
) -> Tensor:
    """The denoising-loss surrogate of log p_theta(x) - log p_ref(x) -> (B,):
    -w(sigma) (||D_theta(x + sigma n) - x||^2 - ||D_ref(x + sigma n) - x||^2), summed over
    the dimensions, with EDM's weight w. The reference runs without gradients."""
    s = sigma.view(-1, *([1] * (x.ndim - 1)))  # (B, 1, ...)
    xs = x + s * noise  # (B, ...)
    with torch.no_grad():
        e_ref = (ref(xs, sigma, y) - x).pow(2).flatten(1).sum(1)  # (B,)
    e = (model(xs, sigma, y) - x).pow(2).flatten(1).sum(1)  # (B,)
    return -edm_weight(sigma, sigma_data) * (e - e_ref)  # (B,)


def _batch(name: str, v) -> tuple[Tensor, Tensor | None]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be a tensor or a (data, labels or mask) pair")
        return v[0], v[1]
    return v, None


def ddo_loss(
    model: nn.Module,
    ref: nn.Module,
    real,
    fake,
    config: DDOConfig,
    *,
    uncond: Tensor | None = None,
    sigma: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    prompt_len: int = 1,
) -> DDOOutput:
    """The DDO loss of a batch of real rows and as many fakes from the reference.

    Diffusion (floating-point data): ``real`` and ``fake`` are ``x`` or ``(x, y)`` with y
    the labels passed to the denoiser ``model(x, sigma, y)`` (an EDM-preconditioned net);
    ``sigma`` and ``noise`` (one per pair, shared by the real and the fake row) are drawn
    from ``generator`` when not given. Autoregressive (integer tokens): ``real`` and ``fake``
    are ``tokens`` (B, L) or ``(tokens, mask)``; the first ``prompt_len`` tokens condition
    (BOS or class token). ``uncond`` (B,) marks rows whose label was dropped."""
    check_reference(getattr(model, "module", model), ref)  # (unwrap DDP)
    x, cx = _batch("real", real)
    xf, cf = _batch("fake", fake)
    check_tensor("real", x)
    check_tensor("fake", xf)
    if xf.shape != x.shape or xf.dtype != x.dtype:
        raise ValueError(
            f"fakes must be like the real batch: got {xf.dtype} {tuple(xf.shape)}, "
            f"real {x.dtype} {tuple(x.shape)}"
        )
    B = x.shape[0]
    if x.is_floating_point():
        if sigma is None:
            z = torch.randn(B, generator=generator).to(x.device)
            sigma = (z * config.P_std + config.P_mean).exp()
        if noise is None:
            noise = torch.randn(x.shape, generator=generator).to(x.device)
        check_tensor("sigma", sigma, ndim=1, floating=True)
        if sigma.shape[0] != B or noise.shape != x.shape:
            raise ValueError(
                f"sigma must be ({B},) and noise {tuple(x.shape)}, got {tuple(sigma.shape)} "
                f"and {tuple(noise.shape)}"
            )
        if (cx is None) != (cf is None):
            raise ValueError("give labels for both the real and the fake batch, or for neither")
        y = torch.cat([cx, cf]) if cx is not None else None
        r = diffusion_log_ratio(
            model, ref, torch.cat([x, xf]), torch.cat([sigma, sigma]),
            torch.cat([noise, noise]), y, config.sigma_data,
        )  # fmt: skip
    else:
        tokens = torch.cat([x, xf])  # (2B, L): one forward pass per model
        mask = None
        if cx is not None or cf is not None:
            ones = torch.ones_like(x, dtype=torch.bool)
            mask = torch.cat([cx if cx is not None else ones, cf if cf is not None else ones])
        lp = sequence_log_prob(model, tokens, mask, prompt_len)
        with torch.no_grad():
            lp_ref = sequence_log_prob(ref, tokens, mask, prompt_len)
        r = lp - lp_ref  # (2B,)
    r_real, r_fake = r[:B], r[B:]
    loss = ddo_objective(r_real, r_fake, config, uncond)
    with torch.no_grad():
        cond = ~uncond if uncond is not None else torch.ones(B, dtype=torch.bool, device=x.device)
        n = cond.sum().clamp(min=1)
        acc = ((r_real > r_fake) & cond).sum() / n
        margin = ((r_real - r_fake) * cond).sum() / n
    return DDOOutput(loss, r_real, r_fake, acc, margin)
