"""Speed and memory of the mesh tokenizer and of generation.

    python -m benchmarks.mesh.bench_mesh [--toy] [--csv benchmarks/mesh/results.csv]

* ``encode``: faces per second of :meth:`MeshTokenizer.encode` (normalise, quantise, clean,
  patchify, emit) against the plain-Python per-face encoder :func:`tenfold.mesh._ref._encode`
  (the spec, the same tokens), on shipped real meshes; the row ``deepmesh-released`` is the
  1.3 ms/face that issue #18 measured with DeepMesh's own serializer (quoted, not run here).
* ``decode``: faces per second of :meth:`MeshTokenizer.decode` (the grammar, token by token)
  and of the naive tokenizer's per-face decoder.
* ``generate``: new tokens per second of :meth:`MeshGenerator.sample` (constrained, the
  ``mesh/pretrain`` full-preset size: 4 layers, width 128, window 320, 32 cloud tokens),
  batch 1 and 8, with the KV cache and recomputing the window every token.

Every case runs in a forked worker whose peak resident-set growth is ``peak_mb``.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import bench_main, device_name, in_child
from tenfold.mesh import MeshTokenizer, NaiveTokenizer, _ref
from tenfold.mesh.data import real_meshes
from tenfold.mesh.model import MeshGenConfig, MeshGenerator

DEEPMESH_MS_PER_FACE = 1.3
MESHES = ("cow.off", "fandisk.off", "elephant.off", "ant.ply")


def _grid(n: int = 40):
    xs, ys = np.meshgrid(np.arange(n), np.arange(n))
    v = np.stack([xs.ravel(), ys.ravel(), np.sin(xs.ravel() / 4.0)], 1).astype(float)
    f = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            f += [[a, b, d], [a, d, c]]
    return v, np.array(f)


def _mesh(name: str):
    if name == "grid":
        return _grid()
    return {s.name: s for s in real_meshes()}[name].load()


def _best(fn, reps: int) -> float:
    import time

    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _tok_case(name: str, variant: str) -> tuple[float, int]:
    """(seconds of the best of 3, faces) in a fresh worker."""
    torch.set_num_threads(1)
    v, f = _mesh(name)
    tok = MeshTokenizer()
    n = len(tok.quantize(v, f).faces)
    if variant == "ours":
        return _best(lambda: tok.encode(v, f), 3), n
    if variant == "python-loop":
        vl, fl = v.tolist(), f.tolist()
        return _best(lambda: _ref._encode(vl, fl), 1), n
    if variant == "decode":
        t = tok.encode(v, f)
        return _best(lambda: tok.decode(t, strict=True), 2), n
    naive = NaiveTokenizer()
    t = naive.encode(v, f)
    return _best(lambda: naive.decode(t, strict=True), 2), n


def _gen_case(toy: bool, batch: int, cache: bool) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = (MeshGenConfig(n_cond=8, n_layer=1, n_heads=2, head_dim=16, block_size=72) if toy
           else MeshGenConfig(n_cond=32, n_layer=4, n_heads=4, head_dim=32, block_size=352))  # fmt: skip
    gen = MeshGenerator(cfg).eval()
    cond = torch.randn(batch, 256, 6)
    new = 32 if toy else 256
    # min_faces=1 and no EOS before the budget: mask EOS by sampling at a fixed length
    gen.sample(cond, max_new_tokens=16, use_cache=cache)  # warm-up
    return _best(lambda: _sample_fixed(gen, cond, new, cache), 1) / new


def _sample_fixed(gen, cond, new, cache):
    gen.sample(cond, max_new_tokens=new, use_cache=cache,
               generator=torch.Generator().manual_seed(0))  # fmt: skip


def run(toy: bool) -> list[dict]:
    dev = device_name(torch.device("cpu"))
    rows = []
    have = {s.name for s in real_meshes()}
    names = ["grid"] if toy or not have else [m for m in MESHES if m in have]
    for name in names:
        (t_ours, n), _, mb_ours = in_child(_tok_case, name, "ours")
        (t_py, _), _, mb_py = in_child(_tok_case, name, "python-loop")
        (t_dec, _), _, mb_dec = in_child(_tok_case, name, "decode")
        (t_nd, _), _, mb_nd = in_child(_tok_case, name, "naive-decode")
        base = n * DEEPMESH_MS_PER_FACE / 1e3
        for case, variant, t, mb in (
            ("encode", "ours", t_ours, mb_ours),
            ("encode", "python-loop", t_py, mb_py),
            ("encode", "deepmesh-released (quoted)", base, float("nan")),
            ("decode", "ours (grammar)", t_dec, mb_dec),
            ("decode", "naive per-face", t_nd, mb_nd),
        ):
            rows.append({"case": case, "input": f"{name} ({n} faces)", "variant": variant,
                         "ms": round(1e3 * t, 3), "per_s": round(n / t, 1), "unit": "faces/s",
                         "x_deepmesh": round(base / t, 1) if case == "encode" else float("nan"),
                         "peak_mb": round(mb, 1), "device": dev})  # fmt: skip
    for batch in (1, 8):
        per = {}
        for cache in (True, False):
            s, _, mb = in_child(_gen_case, toy, batch, cache)
            per[cache] = s
            rows.append({"case": "generate", "input": f"batch {batch}" + (" (toy)" if toy else ""),
                         "variant": "kv-cache" if cache else "recompute", "ms": round(1e3 * s, 3),
                         "per_s": round(batch / s, 1), "unit": "tokens/s",
                         "x_deepmesh": float("nan"), "peak_mb": round(mb, 1), "device": dev})  # fmt: skip
        rows[-2]["x_recompute"] = round(per[False] / per[True], 2)
    for r in rows:
        r.setdefault("x_recompute", float("nan"))
    return rows


def main(argv=None):
    return bench_main("benchmarks.mesh.bench_mesh", run, argv)


if __name__ == "__main__":
    main()
