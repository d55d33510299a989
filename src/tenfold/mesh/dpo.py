"""Direct Preference Optimization of the mesh generator with automatic 3-D scores.

    cfg = DPOConfig(beta=0.1, pair_margin=0.02, rounds=2, samples_per_cloud=4)
    history = dpo_finetune(gen, clouds, cfg)        # gen changes; a frozen copy is the reference

Each round samples ``samples_per_cloud`` meshes per conditioning cloud from the current
model (constrained, so every sample decodes), scores them (:func:`tenfold.mesh.score_mesh`,
lower combined score is better), pairs a winner with a loser wherever their scores differ by
at least ``pair_margin``, and takes ``steps`` optimizer steps on Rafailov et al.'s loss
-log sigma(beta [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])
against the frozen pre-trained reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.train import TrainConfig, Trainer
from ..core.validate import check_config, check_tensor
from .model import MeshGenerator, Sample
from .scores import MeshScore, score_mesh

__all__ = ["DPOConfig", "DPOOutput", "dpo_finetune", "dpo_loss", "make_pairs", "score_samples"]


@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1
    pair_margin: float = 0.02  # min difference of combined scores for a (winner, loser) pair
    max_pairs_per_cloud: int = 4
    rounds: int = 1
    samples_per_cloud: int = 4
    steps: int = 100  # optimizer steps per round
    batch_size: int = 8  # pairs per step
    lr: float = 5e-5
    sft_weight: float = 0.0  # optional NLL of the winners added to the loss
    # "dpo", or "sft": the control that fine-tunes on the winners' NLL alone (rejection-
    # sampling fine-tuning), with the same pairs, steps and lr
    objective: str = "dpo"
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        check_config(
            self,
            beta=">0",
            pair_margin=">=0",
            max_pairs_per_cloud=">=1",
            rounds=">=1",
            samples_per_cloud=">=2",
            steps=">=1",
            batch_size=">=1",
            lr=">0",
            sft_weight=">=0",
            objective=("dpo", "sft"),
            temperature=">0",
            top_p="(0,1]",
            max_new_tokens=">=1",
        )


class DPOOutput(NamedTuple):
    loss: Tensor
    accuracy: Tensor  # fraction of pairs whose implicit reward prefers the winner
    margin: Tensor  # mean beta * (reward gap)


def dpo_loss(
    logp_w: Tensor, logp_l: Tensor, ref_w: Tensor, ref_l: Tensor, beta: float
) -> DPOOutput:
    """Rafailov et al.'s DPO loss from sequence log-probabilities (B,) of the winners and
    losers under the model and the frozen reference."""
    for name, t in (("logp_w", logp_w), ("logp_l", logp_l), ("ref_w", ref_w), ("ref_l", ref_l)):
        check_tensor(name, t, ndim=1, floating=True)
        if t.shape != logp_w.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, logp_w {tuple(logp_w.shape)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    z = beta * ((logp_w - ref_w) - (logp_l - ref_l))  # (B,)
    return DPOOutput(-F.logsigmoid(z).mean(), (z > 0).float().mean(), z.mean())


def make_pairs(scores: Any, margin: float, max_pairs: int = 4) -> list[tuple[int, int]]:
    """(winner, loser) index pairs among one cloud's samples: every pair whose combined
    scores (lower is better) differ by at least ``margin``, widest gaps first, at most
    ``max_pairs``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise ValueError(f"scores must be a finite 1-D array, got {s}")
    cand = []
    for i in range(len(s)):
        for j in range(len(s)):
            if s[j] - s[i] >= margin and s[j] > s[i]:
                cand.append((s[j] - s[i], i, j))
    cand.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(i, j) for _, i, j in cand[:max_pairs]]


def score_samples(
    samples: list[Sample], points: np.ndarray, normals: np.ndarray
) -> list[MeshScore]:
    return [score_mesh(s.vertices, s.faces, points, normals) for s in samples]


def _pad(seqs: list[np.ndarray], pad: int) -> tuple[Tensor, Tensor]:
    n = max(len(s) for s in seqs)
    t = torch.full((len(seqs), n), pad, dtype=torch.long)
    m = torch.zeros((len(seqs), n), dtype=torch.bool)
    for i, s in enumerate(seqs):
        t[i, : len(s)] = torch.as_tensor(s)
        m[i, : len(s)] = True
    return t, m


@torch.no_grad()
def _log_probs(
    model: MeshGenerator, cond: Tensor, tok: Tensor, mask: Tensor, bs: int = 16
) -> Tensor:
    out = []
    for i in range(0, len(tok), bs):
        out.append(model.log_prob(cond[i : i + bs], tok[i : i + bs], mask[i : i + bs]))
    return torch.cat(out)


def _pair_loss(cfg: DPOConfig, cond: Tensor, win, lose, ref_w: Tensor, ref_l: Tensor):
    """The trainer's loss over a batch of pair indices: DPO (+ the winners' NLL when
    ``sft_weight``), or the winners' NLL alone (``objective="sft"``). cond (P, N, 6); win/lose: (tokens (P, T), mask (P, T))."""
    (tw, mw), (tl, ml) = win, lose

    def loss_fn(m, idx, ctx):
        cnd = cond[idx]
        if cfg.objective == "sft":
            return m.loss(cnd, tw[idx], mw[idx])
        lw = m.log_prob(cnd, tw[idx], mw[idx])
        ll = m.log_prob(cnd, tl[idx], ml[idx])
        out = dpo_loss(lw, ll, ref_w[idx], ref_l[idx], cfg.beta)
        ctx.log(acc=out.accuracy, margin=out.margin)
        loss = out.loss
        if cfg.sft_weight:
            loss = loss + cfg.sft_weight * m.loss(cnd, tw[idx], mw[idx])
        return loss

    return loss_fn


def dpo_finetune(
    model: MeshGenerator,
    clouds: list[tuple[np.ndarray, np.ndarray]],
    config: DPOConfig,
    reference: MeshGenerator | None = None,
    log=None,
) -> list[dict]:
    """Fine-tune ``model`` in place by DPO rounds on the conditioning ``clouds`` (a list of
    (points (N, 3), normals (N, 3)) in the normalised frame). ``reference``: the frozen
    model the log-ratios are taken against (default: a copy of ``model`` as it is now).
    Returns one record per round (pairs, scores of the round's samples, loss, accuracy)."""
    if not clouds:
        raise ValueError("dpo_finetune needs at least one conditioning cloud")
    cfg = config
    if cfg.max_new_tokens > model.config.window:
        raise ValueError(
            f"max_new_tokens={cfg.max_new_tokens} exceeds the model's window "
            f"{model.config.window}: DPO scores whole sequences in one pass"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "model has no trainable parameters (a frozen reference? copy it and call "
            "requires_grad_(True))"
        )
    if reference is model:
        raise ValueError("reference must be a separate (frozen) copy of the model, not the model")
    ref = reference if reference is not None else copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    pad = model.tokenizer.pad
    conds = [
        torch.cat(
            [torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(n, dtype=torch.float32)], -1
        )
        for p, n in clouds
    ]
    history = []
    for rnd in range(cfg.rounds):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + rnd)
        pairs_w, pairs_l, pair_cond = [], [], []
        round_scores = []
        from tqdm.auto import tqdm

        bar = tqdm(
            conds,
            desc=f"{cfg.objective} round {rnd}: sampling",
            disable=not cfg.progress,
            leave=False,
        )
        for ci, c in enumerate(bar):
            cc = c[None].expand(cfg.samples_per_cloud, -1, -1)
            smp = model.sample(
                cc,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                generator=gen,
            )
            sc = [s.combined for s in score_samples(smp, *clouds[ci])]
            round_scores.extend(sc)
            for i, j in make_pairs(sc, cfg.pair_margin, cfg.max_pairs_per_cloud):
                pairs_w.append(smp[i].tokens)
                pairs_l.append(smp[j].tokens)
                pair_cond.append(ci)
        rec = {
            "round": rnd,
            "pairs": len(pairs_w),
            "score_mean": float(np.mean(round_scores)),
        }
        if not pairs_w:
            rec.update(loss=float("nan"), accuracy=float("nan"), note="no pair reached the margin")
            history.append(rec)
            if log:
                log(
                    f"{cfg.objective.upper()} round {rnd}: no pair reached margin {cfg.pair_margin}; skipped"
                )
            continue
        tw, mw = _pad(pairs_w, pad)
        tl, ml = _pad(pairs_l, pad)
        cidx = torch.as_tensor(pair_cond)
        cond_all = torch.stack(conds)  # (C, N, 6)
        if cfg.objective == "dpo":
            ref_w = _log_probs(ref, cond_all[cidx], tw, mw)
            ref_l = _log_probs(ref, cond_all[cidx], tl, ml)
        else:  # the SFT control needs no reference
            ref_w = ref_l = torch.zeros(len(tw))
        n_pairs = len(tw)

        def data(ctx, n=n_pairs):
            return torch.randint(0, n, (min(cfg.batch_size, n),), generator=ctx.generator)

        loss_fn = _pair_loss(cfg, cond_all[cidx], (tw, mw), (tl, ml), ref_w, ref_l)
        tr = Trainer(
            model,
            loss_fn,
            data,
            TrainConfig(
                steps=cfg.steps,
                batch_size=min(cfg.batch_size, n_pairs),
                lr=cfg.lr,
                ema_decay=None,
                seed=cfg.seed + rnd,
                progress=cfg.progress,
                desc=f"{cfg.objective} round {rnd}",
                log_every=10,
            ),
        )
        hist = tr.fit()
        tail = hist[-max(1, len(hist) // 5) :]
        rec.update(
            loss=float(np.mean([h["loss"] for h in tail])),
            accuracy=float(np.mean([h.get("acc", np.nan) for h in tail])),
        )
        history.append(rec)
        if log:
            log(
                f"{cfg.objective.upper()} round {rnd}: {n_pairs} pairs, loss {rec['loss']:.4f}, acc {rec['accuracy']:.2f}"
            )
    model.eval()
    return history
