"""``mesh/dpo``: Direct Preference Optimization of the pre-trained generator with automatic
3-D scores (the paper adds human judgement; we do not), judged on held-out clouds.

The reference is ``mesh/pretrain``'s model for the preset named by ``base`` (trained once and
cached). Each DPO round samples ``samples_per_cloud`` meshes for each training cloud, scores
them against the cloud (:func:`tenfold.mesh.score_mesh`: Chamfer, Hausdorff, normal
consistency, holes, non-manifold edges; lower combined score is better), pairs winners with
losers whose scores differ by at least ``pair_margin``, and fine-tunes against the frozen
reference. A control fine-tunes a second copy of the reference on the same rounds' winners
alone (rejection-sampling fine-tuning: the NLL of each pair's winner, the same steps and
lr), so that a gain of DPO has to be more than training on its best samples. Evaluation draws ``eval_samples`` meshes per held-out cloud from the reference
and from the DPO model with the same random streams (paired), constrained as a user would
sample, plus raw (unconstrained) samples for validity.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ...core.experiment import Claim, Result, RunContext, binomial_noise, experiment, make_config
from ...core.validate import check_config
from ..dpo import DPOConfig, dpo_finetune, score_samples
from .pretrain import (
    PRETRAIN_PRESETS,
    PretrainConfig,
    complete,
    cond_of,
    pretrained_base,
    render_grid,
    sample_clouds,
    true_mesh,
)


@dataclass(frozen=True)
class MeshDPOConfig:
    base: str = "full"  # the mesh/pretrain preset whose model is the reference
    n_train_clouds: int = 0  # training clouds used for preference pairs (0: every one)
    rounds: int = 2
    samples_per_cloud: int = 4
    beta: float = 0.1
    pair_margin: float = 0.02
    max_pairs_per_cloud: int = 3
    steps: int = 100  # optimizer steps per round
    batch_size: int = 8
    lr: float = 5e-5
    sft_weight: float = 0.0
    eval_samples: int = 4  # per held-out cloud, for the reference and the DPO model each
    sft_control: bool = True  # also fine-tune on the winners alone (the control)
    n_render: int = 4
    seed: int = 0

    def __post_init__(self):
        check_config(
            self,
            base=tuple(PRETRAIN_PRESETS),
            n_train_clouds=">=0",
            rounds=">=1",
            samples_per_cloud=">=2",
            beta=">0",
            pair_margin=">=0",
            max_pairs_per_cloud=">=1",
            steps=">=1",
            batch_size=">=1",
            lr=">0",
            sft_weight=">=0",
            eval_samples=">=1",
            n_render=">=0",
        )

    def base_config(self) -> PretrainConfig:
        return make_config(PretrainConfig, PRETRAIN_PRESETS[self.base], where="mesh/dpo base")


def _scores(samples, clouds) -> list[list]:
    return [score_samples(row, p, n) for row, (p, n) in zip(samples, clouds)]


def _mean(rows: list[list], attr: str) -> float:
    return float(np.mean([getattr(s, attr) for r in rows for s in r]))


@experiment(
    "mesh/dpo",
    MeshDPOConfig,
    presets={
        "quick": dict(
            base="quick",
            n_train_clouds=12,
            rounds=2,
            samples_per_cloud=4,
            steps=30,
            batch_size=4,
            lr=1e-4,
            eval_samples=2,
            n_render=3,
        ),
        "full": {},
    },  # fmt: skip
    summary="DPO of the pre-trained mesh generator with preference pairs from automatic 3-D scores: combined score, Chamfer, holes, non-manifold edges and validity on held-out clouds before and after, the paired win rate, and a winners-only fine-tuning control.",
)
def dpo(cfg: MeshDPOConfig, ctx: RunContext) -> Result:
    t0 = time.perf_counter()
    bcfg = cfg.base_config()
    ref, ds, _ = pretrained_base(bcfg, ctx.progress, ctx.log)
    rng = np.random.default_rng(cfg.seed + 11)
    train = [e for e in ds.train if e.aug == 0]
    if cfg.n_train_clouds:
        train = [
            train[i]
            for i in sorted(
                rng.choice(len(train), min(cfg.n_train_clouds, len(train)), replace=False)
            )
        ]
    val = [e for e in ds.val if e.aug == 0]

    def clouds(exs):
        out = []
        for e in exs:
            c = cond_of(e, bcfg.cond_points, rng).numpy()
            out.append((c[:, :3], c[:, 3:]))
        return out

    train_clouds, val_clouds = clouds(train), clouds(val)
    model = copy.deepcopy(ref)
    dcfg = DPOConfig(beta=cfg.beta, pair_margin=cfg.pair_margin,
                     max_pairs_per_cloud=cfg.max_pairs_per_cloud, rounds=cfg.rounds,
                     samples_per_cloud=cfg.samples_per_cloud, steps=cfg.steps,
                     batch_size=cfg.batch_size, lr=cfg.lr, sft_weight=cfg.sft_weight,
                     temperature=bcfg.temperature, top_p=bcfg.top_p,
                     max_new_tokens=min(bcfg.max_new_tokens, bcfg.window), seed=cfg.seed,
                     progress=ctx.progress)  # fmt: skip
    t1 = time.perf_counter()
    history = dpo_finetune(model, train_clouds, dcfg, reference=ref, log=ctx.log)
    dpo_s = time.perf_counter() - t1
    # the control: the same rounds, pairs' winners, steps and lr, fine-tuned by NLL alone
    # (rejection-sampling fine-tuning), so that a gain of DPO is more than training on its
    # best samples
    sft = copy.deepcopy(ref).requires_grad_(True)  # (dpo_finetune froze the reference)
    sft_hist = [] if not cfg.sft_control else dpo_finetune(
        sft, train_clouds, replace(dcfg, objective="sft"), reference=ref, log=ctx.log)  # fmt: skip
    # held-out evaluation: the same random streams for both models (paired samples)
    conds = torch.stack([torch.from_numpy(np.concatenate(c, 1)) for c in val_clouds])
    k = cfg.eval_samples
    seed = cfg.seed + 1000
    nets = (("ref", ref), ("dpo", model)) + ((("sft", sft),) if cfg.sft_control else ())
    smp = {m: sample_clouds(net, conds, k, bcfg, seed, progress=ctx.progress) for m, net in nets}
    raw = {m: sample_clouds(net, conds, k, bcfg, seed, constrained=False, progress=ctx.progress)
           for m, net in nets}  # fmt: skip
    sc = {m: _scores(smp[m], val_clouds) for m in smp}
    comb = {m: np.array([[s.combined for s in r] for r in sc[m]]) for m in sc}  # (C, k)
    per_cloud = comb["ref"].mean(1) - comb["dpo"].mean(1)  # > 0: DPO better
    wins = (comb["dpo"] < comb["ref"]).astype(float) + 0.5 * (comb["dpo"] == comb["ref"])
    n_pairs = wins.size
    valid = {m: float(np.mean([complete(s) for r in raw[m] for s in r])) for m in raw}
    n_raw = len(val) * k
    metrics = {"val_clouds": len(val), "train_clouds": len(train), "dpo_s": dpo_s,
               "pairs_total": int(sum(h["pairs"] for h in history))}  # fmt: skip
    for m in smp:
        for attr in ("combined", "chamfer", "hausdorff", "normal_consistency",
                     "boundary_fraction", "nonmanifold_fraction", "n_faces"):  # fmt: skip
            metrics[f"{m}.{attr}"] = _mean(sc[m], attr)
        metrics[f"{m}.valid_raw"] = valid[m]
    metrics["win_rate"] = float(wins.mean())
    metrics["seconds"] = time.perf_counter() - t0
    vnoise = math.hypot(binomial_noise(valid["ref"], n_raw), binomial_noise(valid["dpo"], n_raw))
    claims = [
        Claim.judge(
            "dpo-improves-score",
            "DPO with preference pairs scored by 3-D metrics aligns the generator, improving "
            "the precision and completeness of meshes conditioned on point clouds (measured: "
            "the combined automatic score on held-out clouds, lower is better)",
            source="abstract", values=per_cloud.tolist(), margin=0.0, sense="above",
            unit="score drop",
            measured=f"combined score {metrics['ref.combined']:.3f} -> "
            f"{metrics['dpo.combined']:.3f} (Chamfer {metrics['ref.chamfer']:.3f} -> "
            f"{metrics['dpo.chamfer']:.3f}), {len(val)} held-out clouds x {k} paired samples",
            noise_from="two standard errors of the per-cloud score drops",
        ),
        Claim.judge(
            "dpo-wins",
            "DPO samples beat the reference's samples on the automatic score more often "
            "than not (paired: same cloud, same random stream)",
            source="ours", values=metrics["win_rate"], margin=0.5, sense="above",
            noise=binomial_noise(metrics["win_rate"], n_pairs), unit="win rate",
            measured=f"{wins.sum():.1f} wins of {n_pairs} paired samples (ties count half)",
            noise_from="two binomial standard errors over the paired samples",
        ),
        Claim.judge(
            "validity-kept",
            "DPO improves the score without a drop in validity (raw, unconstrained samples "
            "that decode completely; a drop of more than 5 points fails)",
            source="ours", values=valid["dpo"] - valid["ref"], margin=-0.05, sense="above",
            noise=vnoise, unit="share",
            measured=f"complete raw samples: reference {valid['ref']:.3f}, DPO "
            f"{valid['dpo']:.3f} ({n_raw} each)",
            noise_from="two binomial standard errors of each rate, added in quadrature",
        ),
    ]  # fmt: skip
    if cfg.sft_control:
        gap = comb["sft"].mean(1) - comb["dpo"].mean(1)  # > 0: DPO better than the control
        claims.append(Claim.judge(
            "dpo-beats-sft",
            "the preference pairs' losers carry information: DPO beats fine-tuning on the "
            "winners alone (same pairs, steps and lr) on the held-out combined score",
            source="ours", values=gap.tolist(), margin=0.0, sense="above", unit="score drop",
            measured=f"combined score: winners-only SFT {metrics['sft.combined']:.3f}, DPO "
            f"{metrics['dpo.combined']:.3f}, reference {metrics['ref.combined']:.3f}",
            noise_from="two standard errors of the per-cloud differences",
        ))  # fmt: skip
    rows = []
    for i, e in enumerate(val):
        for j in range(k):
            row = {"mesh": e.name, "k": j}
            for m in sc:
                x = sc[m][i][j]
                row.update({f"{m}_combined": round(x.combined, 4),
                            f"{m}_chamfer": round(x.chamfer, 4), f"{m}_faces": x.n_faces})  # fmt: skip
            rows.append(row)
    figs = []
    if cfg.n_render:
        grid = []
        for i, e in enumerate(val[: cfg.n_render]):
            tv, tf = true_mesh(e, ref)
            cells = [("ground truth", tv, tf)]
            for m in ("ref", "dpo"):
                s = smp[m][i][0]
                cells.append((f"{m}: score {sc[m][i][0].combined:.3f}", s.vertices, s.faces))
            grid.append((e.name, cells))
        figs.append(render_grid(ctx, grid, "samples", "held-out clouds: reference vs DPO (paired)"))
    hist = [{"objective": obj, **{k_: (round(v, 4) if isinstance(v, float) else v)
                                  for k_, v in h.items()}}
            for obj, hs in (("dpo", history), ("sft", sft_hist)) for h in hs]  # fmt: skip
    return Result(metrics=metrics, claims=claims, tables={"rounds": hist, "samples": rows},
                  figures=figs,
                  notes=f"Reference: mesh/pretrain --preset {cfg.base}. DPO on {len(train)} "
                  f"training clouds; {metrics['pairs_total']} preference pairs over "
                  f"{cfg.rounds} round(s).")  # fmt: skip
