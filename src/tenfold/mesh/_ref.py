"""The spec of :meth:`MeshTokenizer.encode`: the same tokens, written face by face in plain
Python (lists, dicts, no numpy), the way a first serializer is written. Tests check the
fast path against it token for token; ``benchmarks/mesh`` times both."""

from __future__ import annotations

SCALE = 0.95


def _encode(vertices: list, faces: list, levels: int = 512, split: tuple = (4, 8, 16)) -> list:
    """vertices: [(x, y, z)] floats, faces: [(i, j, k)] -> token ids (BOS ... EOS)."""
    # vocabulary layout (as MeshTokenizer.ranges)
    offsets, o = [], 0
    for n in split:
        offsets.append(o)
        o += n**3
    centre_off = o
    bos = centre_off + split[0] ** 3
    eos = bos + 1
    strides, s = [], levels
    for n in split:
        s //= n
        strides.append(s)
    # normalise and quantise, vertex by vertex
    lo = [min(v[a] for v in vertices) for a in range(3)]
    hi = [max(v[a] for v in vertices) for a in range(3)]
    centre = [(lo[a] + hi[a]) / 2 for a in range(3)]
    extent = max(hi[a] - lo[a] for a in range(3))
    scale = 2 * SCALE / extent if extent > 0 else 1.0
    grid = []
    for v in vertices:
        q = []
        for a in range(3):
            x = (v[a] - centre[a]) * scale
            g = round((x + 1.0) / 2.0 * (levels - 1))
            q.append(min(max(int(g), 0), levels - 1))
        grid.append(tuple(q))
    # merge equal points, order them by (z, y, x)
    points = sorted(set(grid), key=lambda p: (p[2], p[1], p[0]))
    index = {p: i for i, p in enumerate(points)}
    kept = set()
    for f in faces:
        a, b, c = (index[grid[i]] for i in f)
        if a in (b, c) or b == c:
            continue  # degenerate after merging
        while a != min(a, b, c):
            a, b, c = b, c, a
        kept.add((a, b, c))  # a set: cyclic duplicates collapse
    used = sorted({i for f in kept for i in f})
    relabel = {old: new for new, old in enumerate(used)}
    points = [points[i] for i in used]
    flist = sorted(tuple(relabel[i] for i in f) for f in kept)
    # patchify
    incident: dict[int, list[int]] = {}
    for fi, f in enumerate(flist):
        for v in f:
            incident.setdefault(v, []).append(fi)
    unvisited = {v: len(fs) for v, fs in incident.items()}
    visited = [False] * len(flist)

    def visit(fi):
        visited[fi] = True
        for v in flist[fi]:
            unvisited[v] -= 1

    def from_centre(f, c):
        a, b, d = f
        if a == c:
            return b, d
        if b == c:
            return d, a
        return a, b

    seq = []  # (vertex, is_centre)
    for fi, f in enumerate(flist):
        if visited[fi]:
            continue
        c = f[0]
        for v in f[1:]:
            if unvisited[v] > unvisited[c]:
                c = v
        ring = [g for g in incident[c] if not visited[g]]
        x0, y0 = from_centre(f, c)
        visit(fi)
        chain = [x0, y0]
        while True:  # forward: a face (c, last, y)
            step = next(
                (g for g in ring if not visited[g] and from_centre(flist[g], c)[0] == chain[-1]),
                None,
            )
            if step is None:
                break
            visit(step)
            chain.append(from_centre(flist[step], c)[1])
        while True:  # backward: a face (c, w, first)
            step = next(
                (g for g in ring if not visited[g] and from_centre(flist[g], c)[1] == chain[0]),
                None,
            )
            if step is None:
                break
            visit(step)
            chain.insert(0, from_centre(flist[step], c)[0])
        seq.append((c, True))
        seq.extend((v, False) for v in chain)
    # tokens, vertex by vertex
    out = [bos]
    prev = None
    for v, is_centre in seq:
        p = points[v]
        digits = []
        for n, st in zip(split, strides):
            dx, dy, dz = ((p[a] // st) % n for a in range(3))
            digits.append((dx * n + dy) * n + dz)
        start = 0
        if not is_centre:
            while digits[start] == prev[start]:
                start += 1
        for j in range(start, len(split)):
            out.append(digits[j] + (centre_off if (is_centre and j == 0) else offsets[j]))
        prev = digits
    out.append(eos)
    return out
