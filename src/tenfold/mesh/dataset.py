"""Training data for the mesh generator: the shipped real meshes, curated, de-duplicated,
decimated to a face budget, split by mesh, augmented, tokenised, each with the point cloud
(and normals) sampled from its surface in the same normalised frame.

    ds = build_dataset(MeshDataConfig(max_faces=160, n_aug=8))
    ds.train[0].tokens, ds.train[0].points, ds.train[0].normals
    ds.curation          # one row per source mesh: faces before/after and why it was left out
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..core.validate import check_config
from .data import (
    MeshSource,
    augment,
    curate,
    decimate,
    missing_data_hint,
    real_meshes,
    split_by_mesh,
)
from .points import sample_surface
from .tokenizer import MeshTokenizer, dequantize, normalize_vertices

__all__ = ["MeshDataConfig", "MeshDataset", "MeshExample", "build_dataset"]


@dataclass(frozen=True)
class MeshDataConfig:
    """``max_source_faces``: meshes larger than this are left out before decimation (the
    paper filters by face count too); ``max_faces``: the decimation budget; ``n_aug``:
    augmented copies (random rotation and per-axis scale) per training mesh, the first
    copy being the mesh as it is; validation meshes get ``n_aug_val`` copies."""

    min_faces: int = 8
    max_source_faces: int = 60000
    max_faces: int = 160
    n_aug: int = 4
    n_aug_val: int = 1
    n_points: int = 1024
    val_frac: float = 0.2
    levels: int = 512
    split: tuple[int, ...] = (4, 8, 16)
    seed: int = 0

    def __post_init__(self):
        check_config(
            self,
            min_faces=">=1",
            max_source_faces=">=4",
            max_faces=">=4",
            n_aug=">=1",
            n_aug_val=">=1",
            n_points=">=16",
            val_frac="[0,1)",
            levels=">=2",
            split=">=2",
        )


@dataclass
class MeshExample:
    name: str  # the source mesh
    aug: int  # 0: the mesh as it is; k > 0: the k-th random rotation/scale
    tokens: np.ndarray  # (T,) int64, BOS .. EOS
    points: np.ndarray  # (N, 3) float32, on the surface, normalised frame
    normals: np.ndarray  # (N, 3) float32, unit face normals
    n_faces: int


@dataclass
class MeshDataset:
    config: MeshDataConfig
    train: list[MeshExample]
    val: list[MeshExample]
    curation: list[dict] = field(default_factory=list)  # one row per source mesh

    def summary(self) -> dict:
        kept = [r for r in self.curation if r["kept"]]
        return {
            "sources": len(self.curation),
            "kept": len(kept),
            "train_meshes": len({e.name for e in self.train}),
            "val_meshes": len({e.name for e in self.val}),
            "train_examples": len(self.train),
            "val_examples": len(self.val),
            "mean_tokens": float(np.mean([len(e.tokens) for e in self.train + self.val])),
            "max_tokens": int(max(len(e.tokens) for e in self.train + self.val)),
        }


def _content_key(v: np.ndarray, f: np.ndarray, levels: int) -> str:
    """A hash of the mesh after normalisation and quantisation, independent of vertex and
    face order (sphere.off and sphere.ply are one mesh)."""
    nv, _, _ = normalize_vertices(v)
    q = np.clip(np.round((nv + 1) / 2 * (levels - 1)), 0, levels - 1).astype(np.int64)
    tri = np.sort(q[f].reshape(len(f), 9).view([("", np.int64)] * 9).ravel())
    return hashlib.sha1(tri.tobytes()).hexdigest()


def build_dataset(
    config: MeshDataConfig, sources: list[MeshSource] | None = None, progress: bool = False
) -> MeshDataset:
    """Curate ``sources`` (default: :func:`real_meshes`), drop content duplicates, decimate,
    split by mesh and tokenise every augmented copy. Raises when no mesh survives."""
    cfg = config
    if sources is None:
        sources = real_meshes()
        if not sources:
            raise RuntimeError(f"no shipped meshes found: {missing_data_hint()}")
    tok = MeshTokenizer(cfg.levels, cfg.split)
    rows, kept, seen = [], {}, {}
    from tqdm.auto import tqdm

    for s in tqdm(sources, desc="curate meshes", disable=not progress, leave=False):
        row = {"name": s.name, "origin": s.origin, "faces_in": 0, "faces_out": 0, "kept": False}
        try:
            v, f = s.load()
        except Exception as e:  # a file that does not parse is reported, not fatal
            rows.append({**row, "reason": f"unreadable: {e}"})
            continue
        row["faces_in"] = len(f)
        v, f, why = curate(v, f, cfg.min_faces, cfg.max_source_faces)
        if not why:
            key = _content_key(v, f, cfg.levels)
            if key in seen:
                why = f"duplicate of {seen[key]}"
            else:
                seen[key] = s.name
                v, f = decimate(v, f, cfg.max_faces)
                v, f, why = curate(v, f, cfg.min_faces, cfg.max_faces)
                if why:
                    why = f"after decimation: {why}"
        if why:
            rows.append({**row, "reason": why})
            continue
        rows.append({**row, "faces_out": len(f), "kept": True, "reason": ""})
        kept[s.name] = (v, f)
    if not kept:
        raise RuntimeError(f"no mesh survived curation ({len(rows)} sources)")
    tr_names, va_names = split_by_mesh(sorted(kept), cfg.val_frac, cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    def examples(names: list[str], n_aug: int) -> list[MeshExample]:
        out = []
        for name in names:
            v, f = kept[name]
            for k in range(n_aug):
                va = v if k == 0 else augment(v, rng)
                nv, _, _ = normalize_vertices(va)
                qm = tok.quantize(nv, f, normalize=False)
                if len(qm.faces) < cfg.min_faces:  # quantisation merged it away
                    continue
                qv = dequantize(qm.qvertices, cfg.levels)
                pts, nrm = sample_surface(qv, qm.faces, cfg.n_points, rng)
                out.append(
                    MeshExample(
                        name,
                        k,
                        tok.encode_quantized(qm),
                        pts.astype(np.float32),
                        nrm.astype(np.float32),
                        len(qm.faces),
                    )
                )
        return out

    return MeshDataset(cfg, examples(tr_names, cfg.n_aug), examples(va_names, cfg.n_aug_val), rows)
