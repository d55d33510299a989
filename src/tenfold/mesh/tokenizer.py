"""Mesh tokenizers: DeepMesh's patchified 3-level tokens, and two baselines behind the same
interface (nine coordinates per face; a BPT-like 2-level block index at 128 levels).

    tok = MeshTokenizer()                       # 512 levels, c = 128 p + 16 b + o
    tokens = tok.encode(vertices, faces)        # int64 (T,), BOS ... EOS
    v, f = tok.decode(tokens)                   # the quantised, de-duplicated mesh
    res = tok.decode_full(sampled)              # + res.report: what an invalid tail dropped

Every tokenizer first *quantises* (:meth:`quantize`): the bounding box is centred and scaled
so its longest axis spans +-0.95, each coordinate becomes one of ``levels`` integers, and
the mesh is cleaned -- vertices that land on the same grid point are merged, faces that
then repeat a vertex (degenerate) are dropped, a face equal to another up to cyclic order is
dropped (the opposite winding is a different face and is kept), unreferenced vertices go.
What each step removed is counted in :class:`QuantMesh`. Non-manifold edges, isolated
faces and several components are kept as they are. ``decode(encode(m))`` equals that
quantised mesh up to face order and cyclic order within a face.

DeepMesh's sequence (:class:`MeshTokenizer`): vertices are sorted by (z, y, x), each face
rotated to start at its smallest index, faces sorted. *Patchify*: take the first unvisited
face; its vertex with the most unvisited faces is the centre; the centre's unvisited faces,
each read as (centre, x, y) in its winding, are walked as a chain x0 -> y0 = x1 -> y1 ... (forward
from the start face, then backward); the patch is [centre, chain...] and stands for the
faces (centre, chain[i], chain[i+1]). Each coordinate is split into digits (``split``, coarse
first: 512 = 4 * 8 * 16, so c = 128 p + 16 b + o) and the three axes' digits of one level are
one token. The centre writes all its levels, its first in a separate range (the patch-start
marker); a chain vertex writes only from its first level that differs from the vertex before
it -- 1, 2 or 3 tokens. The token ranges are :attr:`MeshTokenizer.ranges`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..core.validate import check_array, check_config, config_fail

__all__ = [
    "BPTTokenizer",
    "DecodeReport",
    "DecodeResult",
    "MeshDecodeError",
    "MeshGrammar",
    "MeshTokenizer",
    "NaiveTokenizer",
    "QuantMesh",
    "canonical_faces",
    "normalize_vertices",
]

SCALE = 0.95  # the longest bounding-box axis spans [-SCALE, SCALE]


class MeshDecodeError(ValueError):
    """A token sequence that is not a mesh (``strict=True``), or a decode input that is not
    a sequence of token ids at all."""


# ----------------------------------------------------------------------------------------
# Quantisation and clean-up, shared by every tokenizer
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantMesh:
    """A quantised, cleaned mesh: ``qvertices`` (V, 3) int64 grid points sorted by (z, y, x),
    ``faces`` (F, 3) int64, each rotated to start at its smallest index, rows sorted.
    The counts say what the clean-up removed."""

    qvertices: np.ndarray
    faces: np.ndarray
    levels: int
    merged_vertices: int = 0  # input vertices that landed on an already used grid point
    degenerate_faces: int = 0  # faces with a repeated vertex after merging (dropped)
    duplicate_faces: int = 0  # faces equal to another up to cyclic order (dropped)
    unreferenced_vertices: int = 0  # vertices no kept face uses (dropped)

    @property
    def vertices(self) -> np.ndarray:
        """The grid points back in [-1, 1] (float64)."""
        return dequantize(self.qvertices, self.levels)


def normalize_vertices(vertices: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre the bounding box at 0 and scale its longest axis to span +-0.95. Returns
    (normalised (V, 3) float64, centre (3,), scale) with ``v = (x - centre) * scale``."""
    v = check_array("vertices", vertices, ndim=2).astype(np.float64)
    if v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    lo, hi = v.min(0), v.max(0)
    centre = (lo + hi) / 2
    extent = float((hi - lo).max())
    scale = 2 * SCALE / extent if extent > 0 else 1.0
    return (v - centre) * scale, centre, scale


def quantize_coords(v: np.ndarray, levels: int) -> np.ndarray:
    """[-1, 1] -> {0, ..., levels-1} (int64), clipped."""
    q = np.rint((v + 1.0) / 2.0 * (levels - 1))
    return np.clip(q, 0, levels - 1).astype(np.int64)


def dequantize(q: np.ndarray, levels: int) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) / (levels - 1) * 2.0 - 1.0


def _check_faces(faces: Any, n_vertices: int) -> np.ndarray:
    f = check_array("faces", faces, ndim=2)
    if f.shape[1] != 3:
        raise ValueError(
            f"faces must be triangles of shape (F, 3), got {f.shape}; triangulate first "
            "(tenfold.mesh.load_mesh does)"
        )
    if f.dtype.kind not in "iu" and not np.all(f == np.round(f)):
        raise TypeError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= n_vertices:
        raise ValueError(
            f"faces index vertices {int(f.min())}..{int(f.max())} but there are {n_vertices}"
        )
    return f


def _rotate_min_first(f: np.ndarray) -> np.ndarray:
    """Rotate each row (a, b, c) cyclically so its smallest entry comes first."""
    k = np.argmin(f, axis=1)
    idx = (k[:, None] + np.arange(3)[None, :]) % 3
    return np.take_along_axis(f, idx, axis=1)


def quantize_mesh(
    vertices: Any, faces: Any, levels: int, normalize: bool = True
) -> tuple[QuantMesh, np.ndarray, float]:
    """Normalise (unless ``normalize=False``: vertices must then lie in [-1, 1]), quantise
    and clean; returns (QuantMesh, centre, scale)."""
    if normalize:
        v, centre, scale = normalize_vertices(vertices)
    else:
        v = check_array("vertices", vertices, ndim=2).astype(np.float64)
        if v.shape[1] != 3:
            raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
        if np.abs(v).max() > 1.0 + 1e-9:
            raise ValueError(
                f"vertices must lie in [-1, 1] with normalize=False, got max |v| = "
                f"{np.abs(v).max():.4g}; pass normalize=True"
            )
        centre, scale = np.zeros(3), 1.0
    f = _check_faces(faces, len(v))
    q = quantize_coords(v, levels)
    # merge equal grid points; order the unique points by (z, y, x)
    keys = (q[:, 2] * levels + q[:, 1]) * levels + q[:, 0]
    ukeys, inv = np.unique(keys, return_inverse=True)
    inv = inv.reshape(-1)
    merged = len(q) - len(ukeys)
    uq = np.stack([ukeys % levels, (ukeys // levels) % levels, ukeys // (levels * levels)], 1)
    f = inv[f]
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    degenerate = int((~ok).sum())
    f = _rotate_min_first(f[ok])
    n_before = len(f)
    if n_before:
        f = np.unique(f, axis=0)  # sorted rows, duplicates (same cyclic order) removed
    duplicate = n_before - len(f)
    used = np.zeros(len(uq), dtype=bool)
    used[f.reshape(-1)] = True
    unref = int((~used).sum())
    remap = np.cumsum(used) - 1
    uq = uq[used]
    f = remap[f] if len(f) else f.reshape(0, 3)
    # relabelling by a monotone map keeps rows rotated and sorted
    qm = QuantMesh(
        np.ascontiguousarray(uq, dtype=np.int64),
        np.ascontiguousarray(f, dtype=np.int64).reshape(-1, 3),
        levels,
        merged_vertices=merged,
        degenerate_faces=degenerate,
        duplicate_faces=duplicate,
        unreferenced_vertices=unref,
    )
    return qm, centre, scale


def canonical_faces(qvertices: np.ndarray, faces: np.ndarray) -> list[tuple]:
    """The mesh as a sorted list of faces, each a tuple of three grid points rotated so the
    smallest point comes first: equal lists mean equal meshes up to face order and cyclic
    order within a face (what the round-trip guarantee compares)."""
    out = []
    for a, b, c in np.asarray(faces).tolist():
        pts = [
            tuple(qvertices[a].tolist()),
            tuple(qvertices[b].tolist()),
            tuple(qvertices[c].tolist()),
        ]
        k = pts.index(min(pts))
        out.append(tuple(pts[k:] + pts[:k]))
    return sorted(out)


# ----------------------------------------------------------------------------------------
# Decode results
# ----------------------------------------------------------------------------------------


@dataclass
class DecodeReport:
    """What decoding used and what it dropped. ``valid`` is True when every token was used
    and the sequence ended with EOS."""

    n_tokens: int
    n_used: int = 0  # tokens that produced the returned mesh (BOS/EOS included)
    n_faces: int = 0
    reason: str = ""  # why decoding stopped early ("" when it did not)
    position: int | None = None  # index of the first token not used
    truncated: bool = False  # the sequence ended without EOS
    dropped_faces: int = 0  # naive tokenizer: complete but invalid faces skipped

    @property
    def dropped_tokens(self) -> int:
        return self.n_tokens - self.n_used

    @property
    def valid(self) -> bool:
        return not self.reason and not self.truncated


class DecodeResult(NamedTuple):
    vertices: np.ndarray  # (V, 3) float64 in [-1, 1]
    faces: np.ndarray  # (F, 3) int64
    qvertices: np.ndarray  # (V, 3) int64 grid points
    report: DecodeReport


def _as_tokens(tokens: Any) -> np.ndarray:
    """A 1-D integer sequence as a Python-friendly int64 array, or MeshDecodeError."""
    try:
        if hasattr(tokens, "detach"):  # torch tensor
            tokens = tokens.detach().cpu().numpy()
        t = np.asarray(tokens)
    except Exception as e:  # noqa: BLE001 - anything unconvertible is the caller's bad input
        raise MeshDecodeError(f"tokens must be a 1-D sequence of integer ids: {e}") from None
    if t.dtype == object or t.dtype.kind not in "iub":
        if (
            t.dtype.kind == "f"
            and t.size
            and np.all(np.isfinite(t))
            and np.all(t == np.round(t))
            or t.size == 0
        ):
            t = t.astype(np.int64)
        else:
            raise MeshDecodeError(f"tokens must be integer ids, got dtype {t.dtype}")
    if t.ndim != 1:
        raise MeshDecodeError(f"tokens must be 1-D, got shape {t.shape}")
    return t.astype(np.int64)


def _finish(faces: list, levels: int, report: DecodeReport, strict: bool) -> DecodeResult:
    """Faces given as triples of grid-point keys ((x L + y) L + z) -> DecodeResult."""
    if strict and not report.valid:
        where = f" at token {report.position}" if report.position is not None else ""
        raise MeshDecodeError(f"invalid mesh token sequence{where}: {report.reason or 'no EOS'}")
    # keep only vertices some face uses, in first-use order
    order: dict[int, int] = {}
    f_out = []
    for face in faces:
        f_out.append([order.setdefault(k, len(order)) for k in face])
    keys = np.fromiter(order.keys(), dtype=np.int64, count=len(order))
    q = np.stack([keys // (levels * levels), (keys // levels) % levels, keys % levels], 1)
    q = q.reshape(-1, 3).astype(np.int64)
    f = np.asarray(f_out, dtype=np.int64).reshape(-1, 3)
    report.n_faces = len(f)
    return DecodeResult(dequantize(q, levels), f, q, report)


# ----------------------------------------------------------------------------------------
# DeepMesh-style patchified, multi-level tokenizer
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ranges:
    level_offsets: tuple[int, ...]  # start of level j's range
    level_sizes: tuple[int, ...]  # n_j ** 3
    centre_offset: int
    bos: int
    eos: int
    pad: int
    vocab_size: int


@dataclass(frozen=True)
class MeshTokenizer:
    """DeepMesh's tokenizer. ``levels`` grid points per axis, split into digits ``split``
    (coarse to fine, product = levels). Vocabulary: one range per level (n_j^3 tokens), a
    patch-centre range (the centre's level-0 token), then BOS, EOS, PAD."""

    levels: int = 512
    split: tuple[int, ...] = (4, 8, 16)
    ranges: _Ranges = field(init=False, repr=False, compare=False)

    name = "deepmesh"

    def __post_init__(self):
        check_config(self, levels=">=2", split=">=2")
        if math.prod(self.split) != self.levels:
            config_fail(self, f"split {self.split} must multiply to levels={self.levels}")
        offs, sizes, o = [], [], 0
        for n in self.split:
            offs.append(o)
            sizes.append(n**3)
            o += n**3
        centre = o
        bos = centre + self.split[0] ** 3
        object.__setattr__(
            self,
            "ranges",
            _Ranges(tuple(offs), tuple(sizes), centre, bos, bos + 1, bos + 2, bos + 3),
        )
        strides = []
        s = self.levels
        for n in self.split:
            s //= n
            strides.append(s)
        object.__setattr__(self, "_strides", tuple(strides))

    # -- public interface -------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.ranges.vocab_size

    @property
    def bos(self) -> int:
        return self.ranges.bos

    @property
    def eos(self) -> int:
        return self.ranges.eos

    @property
    def pad(self) -> int:
        return self.ranges.pad

    def quantize(self, vertices: Any, faces: Any, normalize: bool = True) -> QuantMesh:
        """The quantised, cleaned mesh this tokenizer encodes (see the module docstring)."""
        return quantize_mesh(vertices, faces, self.levels, normalize)[0]

    def encode(self, vertices: Any, faces: Any, normalize: bool = True) -> np.ndarray:
        """(V, 3) float vertices, (F, 3) int triangles -> int64 tokens [BOS, ..., EOS]."""
        return self.encode_quantized(self.quantize(vertices, faces, normalize))

    def encode_quantized(self, qm: QuantMesh) -> np.ndarray:
        if qm.levels != self.levels:
            raise ValueError(f"QuantMesh has {qm.levels} levels, tokenizer {self.levels}")
        seq, is_centre = _patchify(qm.faces, len(qm.qvertices))
        return self._emit(qm.qvertices, seq, is_centre)

    def decode(self, tokens: Any, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """tokens -> (vertices (V, 3) float64 in [-1, 1], faces (F, 3) int64). A sequence
        that turns invalid or ends early gives the mesh of its valid prefix (see
        :meth:`decode_full` for the report); ``strict=True`` raises MeshDecodeError."""
        r = self.decode_full(tokens, strict=strict)
        return r.vertices, r.faces

    def decode_full(self, tokens: Any, strict: bool = False) -> DecodeResult:
        """Like :meth:`decode`, plus the grid points and a :class:`DecodeReport`."""
        t = _as_tokens(tokens)
        g = MeshGrammar(self)
        report = DecodeReport(n_tokens=len(t))
        n_faces = 0
        for i, tok in enumerate(t.tolist()):
            err = g.feed(tok)
            if err:
                report.reason, report.position = err, i
                break
            if g.done or len(g.faces) != n_faces or i == 0:
                n_faces = len(g.faces)
                report.n_used = i + 1
            if g.done:
                if i + 1 < len(t):
                    report.reason, report.position = "tokens after EOS", i + 1
                break
        if not g.done:
            report.truncated = True
            if report.position is None:
                report.position = len(t)
        return _finish(g.faces, self.levels, report, strict)

    def tokens_per_face(self, tokens: np.ndarray, n_faces: int) -> float:
        """Tokens per face, BOS and EOS not counted."""
        return (len(tokens) - 2) / max(n_faces, 1)

    def token_kind(self, tok: int) -> str:
        """'level0'.., 'centre', 'bos', 'eos', 'pad' or 'invalid' (for docs and debugging)."""
        r = self.ranges
        for j, (o, n) in enumerate(zip(r.level_offsets, r.level_sizes)):
            if o <= tok < o + n:
                return f"level{j}"
        if r.centre_offset <= tok < r.bos:
            return "centre"
        return {r.bos: "bos", r.eos: "eos", r.pad: "pad"}.get(tok, "invalid")

    # -- internals --------------------------------------------------------------------

    def _digits(self, q: np.ndarray) -> np.ndarray:
        """(..., 3) grid points -> (..., n_levels) per-level combined digits."""
        out = []
        for n, s in zip(self.split, self._strides):
            d = (q // s) % n  # (..., 3)
            out.append((d[..., 0] * n + d[..., 1]) * n + d[..., 2])
        return np.stack(out, -1)

    def _emit(self, qv: np.ndarray, seq: np.ndarray, is_centre: np.ndarray) -> np.ndarray:
        r = self.ranges
        nl = len(self.split)
        if len(seq) == 0:
            return np.array([r.bos, r.eos], dtype=np.int64)
        dig = self._digits(qv[seq])  # (M, nl)
        prev = np.roll(dig, 1, axis=0)
        differ = dig != prev  # (M, nl)
        start = np.argmax(differ, axis=1)  # first differing level
        start[is_centre] = 0
        tok = dig + np.asarray(r.level_offsets)[None, :]  # (M, nl)
        tok[is_centre, 0] = dig[is_centre, 0] + r.centre_offset
        keep = np.arange(nl)[None, :] >= start[:, None]  # (M, nl)
        body = tok[keep]  # row-major: vertex by vertex, coarse to fine
        return np.concatenate([[r.bos], body, [r.eos]]).astype(np.int64)


class BPTTokenizer(MeshTokenizer):
    """A BPT-like baseline: the same patchified sequence at 128 levels with a 2-level block
    index (16 blocks x 8 offsets per axis)."""

    name = "bpt"

    def __init__(self, levels: int = 128, split: tuple[int, ...] = (16, 8)):
        super().__init__(levels=levels, split=split)


def _patchify(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The patch sequence of sorted, rotated faces: (vertex indices (M,), is_centre (M,))."""
    F = len(faces)
    if F == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    flat = faces.reshape(-1)
    order = np.argsort(flat, kind="stable")  # incident faces of each vertex, in face order
    counts = np.bincount(flat, minlength=n_vertices)
    starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
    inc_faces = (order // 3).tolist()
    fl = faces.tolist()
    unv = counts.tolist()  # unvisited faces per vertex
    visited = bytearray(F)
    seq: list[int] = []
    cen: list[bool] = []
    ptr = 0
    while True:
        while ptr < F and visited[ptr]:
            ptr += 1
        if ptr == F:
            break
        a, b, c = fl[ptr]
        # centre: the start face's vertex with the most unvisited faces (first on ties)
        ctr, best = a, unv[a]
        if unv[b] > best:
            ctr, best = b, unv[b]
        if unv[c] > best:
            ctr = c
        nxt: dict[int, list] = {}
        prv: dict[int, list] = {}
        for fi in inc_faces[starts[ctr] : starts[ctr + 1]]:
            if visited[fi]:
                continue
            p, q, r = fl[fi]
            if p == ctr:
                x, y = q, r
            elif q == ctr:
                x, y = r, p
            else:
                x, y = p, q
            nxt.setdefault(x, []).append((fi, y))
            prv.setdefault(y, []).append((fi, x))
        # the start face, read from the centre
        if a == ctr:
            x0, y0 = b, c
        elif b == ctr:
            x0, y0 = c, a
        else:
            x0, y0 = a, b
        visited[ptr] = 1
        unv[a] -= 1
        unv[b] -= 1
        unv[c] -= 1
        fwd = [x0, y0] + _walk(nxt, y0, fl, visited, unv)  # faces (ctr, cur, next)
        back = _walk(prv, x0, fl, visited, unv)[::-1]  # faces (ctr, prev, cur)
        seq.append(ctr)
        cen.append(True)
        seq.extend(back)
        seq.extend(fwd)
        cen.extend([False] * (len(back) + len(fwd)))
    return np.asarray(seq, dtype=np.int64), np.asarray(cen, dtype=bool)


def _walk(links: dict, cur: int, fl: list, visited: bytearray, unv: list) -> list[int]:
    """Follow ``links`` (vertex -> [(face, next vertex)]) from ``cur`` over unvisited faces,
    visiting them; returns the vertices reached, in order."""
    out = []
    while True:
        step = _take(links.get(cur), visited)
        if step is None:
            return out
        fi, cur = step
        _visit(fi, fl, visited, unv)
        out.append(cur)


def _take(cands: list | None, visited: bytearray):
    """Pop the first unvisited (face, vertex) of a candidate list (visited ones go too)."""
    if not cands:
        return None
    while cands:
        fi, v = cands[0]
        del cands[0]
        if not visited[fi]:
            return fi, v
    return None


def _visit(fi: int, fl: list, visited: bytearray, unv: list) -> None:
    visited[fi] = 1
    p, q, r = fl[fi]
    unv[p] -= 1
    unv[q] -= 1
    unv[r] -= 1


# ----------------------------------------------------------------------------------------
# The grammar: one state machine for decoding and for constrained sampling
# ----------------------------------------------------------------------------------------


class MeshGrammar:
    """The state of a partial DeepMesh token sequence. :meth:`feed` takes one token and
    returns "" or the reason it cannot follow; :meth:`allowed` is the boolean mask of the
    tokens that can follow (what the constrained sampler keeps), so every sequence it lets
    through decodes to a mesh. Canonical form is enforced: a chain vertex starts at the
    first level where it differs from the vertex before it, and no face repeats a vertex
    or an earlier face."""

    def __init__(self, tok: MeshTokenizer, min_faces: int = 0):
        self.tok = tok
        r = tok.ranges
        self.r = r
        self.nl = len(tok.split)
        self.split = tok.split
        self.L = tok.levels
        self.min_faces = min_faces
        self.started = False
        self.done = False
        self.centre: int | None = None  # vertex key of the patch centre
        self.centre_digits: tuple | None = None
        self.chain = 0  # chain vertices of the current patch so far
        self.prev: tuple | None = None  # digits of the last complete vertex
        self.prev_key: int | None = None
        self.pending: list[int] = []  # digits of the vertex being written
        self.pending_centre = False
        self.vertex_done = False  # the last token completed a vertex (or BOS/EOS)
        self.faces: list[tuple[int, int, int]] = []
        self._pair: dict[tuple[int, int], set] = {}  # (a, b) -> {x : face (a, b, x) exists}
        # per level: digit -> per-axis digits, to rebuild a grid point
        self._stride = tok._strides

    # -- helpers ------------------------------------------------------------------------

    def _key(self, digits: tuple | list) -> int:
        x = y = z = 0
        for d, n, s in zip(digits, self.split, self._stride):
            dx, rem = divmod(d, n * n)
            dy, dz = divmod(rem, n)
            x += dx * s
            y += dy * s
            z += dz * s
        return (x * self.L + y) * self.L + z

    def _level_of(self, t: int) -> int:
        r = self.r
        for j in range(self.nl):
            if r.level_offsets[j] <= t < r.level_offsets[j] + r.level_sizes[j]:
                return j
        return -1

    def _face_ok(self, c: int, p: int, v: int) -> str:
        if v == c:
            return "chain vertex equals the patch centre"
        if v == p:
            return "chain vertex equals the previous vertex"
        if v in self._pair.get((c, p), ()):
            return "face repeats an earlier face"
        return ""

    def _add_face(self, c: int, p: int, v: int) -> None:
        self.faces.append((c, p, v))
        self._pair.setdefault((c, p), set()).add(v)
        self._pair.setdefault((p, v), set()).add(c)
        self._pair.setdefault((v, c), set()).add(p)

    # -- the machine -------------------------------------------------------------------

    def feed(self, t: int) -> str:
        """Take token ``t``; returns "" or why it cannot follow (the state is then unchanged)."""
        r = self.r
        self.vertex_done = False
        if self.done:
            return "token after EOS"
        if not self.started:
            if t != r.bos:
                return "sequence must start with BOS"
            self.started = True
            self.vertex_done = True
            return ""
        if self.pending:  # inside a vertex: the next level must follow
            j = len(self.pending)
            if self._level_of(t) != j:
                return f"expected a level-{j} token"
            d = t - r.level_offsets[j]
            if j == self.nl - 1:
                return self._complete(self.pending + [d])
            self.pending.append(d)
            return ""
        # between vertices
        if r.centre_offset <= t < r.bos:
            if self.centre is not None and self.chain < 2:
                return "a patch needs at least two chain vertices"
            self.centre, self.chain = None, 0
            self.pending = [t - r.centre_offset]
            self.pending_centre = True
            if self.nl == 1:
                return self._complete(self.pending)
            return ""
        if t == r.eos:
            if self.centre is not None and self.chain < 2:
                return "a patch needs at least two chain vertices"
            if len(self.faces) < self.min_faces:
                return f"EOS before {self.min_faces} face(s)"
            self.done = True
            self.vertex_done = True
            return ""
        j = self._level_of(t)
        if j < 0:
            return f"token {t} is not a mesh token here"
        if self.centre is None:
            return "a patch must start with a centre token"
        d = t - r.level_offsets[j]
        if d == self.prev[j]:
            return f"a vertex starting at level {j} must differ from the previous one there"
        digits = list(self.prev[:j]) + [d]
        self.pending_centre = False
        if j == self.nl - 1:
            return self._complete(digits)
        self.pending = digits
        return ""

    def _complete(self, digits: list) -> str:
        key = self._key(digits)
        if self.pending_centre:
            self.centre, self.centre_digits, self.chain = key, tuple(digits), 0
        else:
            if self.chain >= 1:
                err = self._face_ok(self.centre, self.prev_key, key)
                if err:
                    return err
                self._add_face(self.centre, self.prev_key, key)
            elif key == self.centre:
                return "chain vertex equals the patch centre"
            self.chain += 1
        self.prev, self.prev_key = tuple(digits), key
        self.pending = []
        self.pending_centre = False
        self.vertex_done = True
        return ""

    def allowed(self) -> np.ndarray:
        """Boolean mask (vocab_size,) of the tokens that may follow."""
        r = self.r
        m = np.zeros(r.vocab_size, dtype=bool)
        if self.done:
            m[r.pad] = True
            return m
        if not self.started:
            m[r.bos] = True
            return m
        if self.pending:
            j = len(self.pending)
            o, n = r.level_offsets[j], r.level_sizes[j]
            m[o : o + n] = True
            if j == self.nl - 1 and not self.pending_centre:
                self._mask_last(m, self.pending)
            return m
        can_close = self.centre is None or self.chain >= 2
        if can_close:
            m[r.centre_offset : r.bos] = True
            if len(self.faces) >= self.min_faces:
                m[r.eos] = True
            if self.centre is None:  # right after BOS
                return m
        for j in range(self.nl):
            o, n = r.level_offsets[j], r.level_sizes[j]
            m[o : o + n] = True
            m[o + self.prev[j]] = False
        last = self.nl - 1
        self._mask_last(m, list(self.prev[:last]))
        return m

    def _mask_last(self, m: np.ndarray, prefix: list) -> None:
        """Mask the last-level tokens that would complete ``prefix`` into the centre, the
        previous vertex, or a vertex that repeats a face."""
        last = self.nl - 1
        bad = [self.centre]
        if self.chain >= 1:
            bad.append(self.prev_key)
            bad.extend(self._pair.get((self.centre, self.prev_key), ()))
        L = self.L
        for k in bad:
            if k is None:
                continue
            q = np.array([k // (L * L), (k // L) % L, k % L])
            d = self.tok._digits(q).tolist()
            if d[:last] == list(prefix):
                m[self.r.level_offsets[last] + d[last]] = False


# ----------------------------------------------------------------------------------------
# Baseline: nine coordinates per face
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NaiveTokenizer:
    """The baseline of PolyGen/MeshGPT-style sequences: every face writes its three
    vertices' (x, y, z) grid coordinates, nine tokens per face, faces in the sorted order of
    :class:`QuantMesh`. Vocabulary: ``levels`` coordinate values, then BOS, EOS, PAD."""

    levels: int = 512

    name = "naive"

    def __post_init__(self):
        check_config(self, levels=">=2")

    @property
    def vocab_size(self) -> int:
        return self.levels + 3

    @property
    def bos(self) -> int:
        return self.levels

    @property
    def eos(self) -> int:
        return self.levels + 1

    @property
    def pad(self) -> int:
        return self.levels + 2

    def quantize(self, vertices: Any, faces: Any, normalize: bool = True) -> QuantMesh:
        return quantize_mesh(vertices, faces, self.levels, normalize)[0]

    def encode(self, vertices: Any, faces: Any, normalize: bool = True) -> np.ndarray:
        return self.encode_quantized(self.quantize(vertices, faces, normalize))

    def encode_quantized(self, qm: QuantMesh) -> np.ndarray:
        body = qm.qvertices[qm.faces].reshape(-1)  # (F * 9,)
        return np.concatenate([[self.bos], body, [self.eos]]).astype(np.int64)

    def decode(self, tokens: Any, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        r = self.decode_full(tokens, strict=strict)
        return r.vertices, r.faces

    def decode_full(self, tokens: Any, strict: bool = False) -> DecodeResult:
        t = _as_tokens(tokens).tolist()
        L = self.levels
        report = DecodeReport(n_tokens=len(t))
        faces: list[tuple[int, int, int]] = []
        seen: set[tuple[int, int, int]] = set()
        done = False
        if not t or t[0] != self.bos:
            report.reason, report.position = "sequence must start with BOS", 0
        else:
            report.n_used = 1
            i = 1
            while i < len(t):
                if t[i] == self.eos:
                    done = True
                    report.n_used = i + 1
                    if i + 1 < len(t):
                        report.reason, report.position = "tokens after EOS", i + 1
                    break
                chunk = t[i : i + 9]
                bad = next((k for k, v in enumerate(chunk) if not 0 <= v < L), None)
                if bad is not None:
                    report.reason, report.position = (
                        f"token {chunk[bad]} is not a coordinate",
                        i + bad,
                    )
                    break
                if len(chunk) < 9:
                    break  # truncated inside a face
                keys = [
                    (chunk[3 * k] * L + chunk[3 * k + 1]) * L + chunk[3 * k + 2] for k in range(3)
                ]
                if len(set(keys)) < 3:
                    report.reason, report.position = "face repeats a vertex", i
                    break
                k = keys.index(min(keys))
                canon = tuple(keys[k:] + keys[:k])
                if canon in seen:
                    report.reason, report.position = "face repeats an earlier face", i
                    break
                seen.add(canon)
                faces.append(tuple(keys))
                report.n_used = i + 9
                i += 9
        if not done:
            report.truncated = True
            if report.position is None:
                report.position = len(t)
        return _finish(faces, L, report, strict)

    def tokens_per_face(self, tokens: np.ndarray, n_faces: int) -> float:
        return (len(tokens) - 2) / max(n_faces, 1)
