"""Meshes and point clouds: files (OBJ / PLY / OFF / STL), the real meshes that ship in
packages, curation, decimation, augmentation and a split by mesh.

    v, f = load_mesh("cow.off")                    # (V, 3) float64, (F, 3) int64 triangles
    pts, nrm = load_points("scan.ply")             # normals None when the file has none
    for src in real_meshes(): v, f = src.load()    # CGAL's 143 meshes + pyvista's 4, no download

Real meshes: Debian's ``libcgal-demo`` puts CGAL's example data in
``/usr/share/doc/libcgal-dev/data.tar.gz`` (read straight from the archive); the PyPI
package ``pyvista`` ships four PLY files in ``pyvista/examples`` (found on disk; pyvista
itself is never imported). ``make install`` installs both; without them the list is
shorter and :func:`real_meshes` says what to install.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.validate import check_array, check_number

__all__ = [
    "CGAL_DATA",
    "MeshFileError",
    "MeshSource",
    "augment",
    "random_rotation",
    "curate",
    "decimate",
    "load_mesh",
    "load_points",
    "missing_data_hint",
    "cgal_bytes",
    "real_meshes",
    "save_mesh",
    "save_points",
    "split_by_mesh",
]

CGAL_DATA = Path(os.environ.get("TENFOLD_CGAL_DATA", "/usr/share/doc/libcgal-dev/data.tar.gz"))
MESH_TYPES = ("obj", "ply", "off", "stl", "glb", "gltf")
POINT_TYPES = ("ply", "obj", "off", "xyz", "txt", "npy", "npz", "stl")
# Meshes of the Stanford 3D Scanning Repository among CGAL's data (its terms: research use,
# credit the repository); every other file of CGAL's data is CC0 1.0 (libcgal-demo's
# copyright file).
STANFORD = ("bunny", "armadillo", "dragon")


class MeshFileError(ValueError):
    """A mesh or point file that cannot be read: the message names the file and the fix."""


# ----------------------------------------------------------------------------------------
# Reading and writing
# ----------------------------------------------------------------------------------------


def _read_bytes(src: Any) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src), "<bytes>"
    p = Path(src)
    if not p.exists():
        raise MeshFileError(f"{p}: no such file")
    if p.is_dir():
        raise MeshFileError(f"{p} is a directory, not a mesh file")
    return p.read_bytes(), str(p)


def _kind(name: str, file_type: str | None, allowed: tuple) -> str:
    ext = (file_type or Path(name).suffix.lstrip(".")).lower()
    if ext not in allowed:
        raise MeshFileError(
            f"{name}: unknown file type {ext!r}; expected one of {', '.join(allowed)} "
            "(pass file_type= for a file without a suffix)"
        )
    return ext


def _parse_off(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """OFF (and COFF / NOFF / CNOFF): polygons are fan-triangulated, colours ignored."""
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MeshFileError(f"{name}: binary OFF is not supported; save it as ASCII OFF") from None
    lines = []
    for ln in text.splitlines():
        ln = ln.split("#", 1)[0].strip()
        if ln:
            lines.append(ln)
    if not lines:
        raise MeshFileError(f"{name}: empty OFF file")
    head = lines[0].split()
    if not head[0].upper().endswith("OFF"):
        raise MeshFileError(f"{name}: an OFF file starts with 'OFF', got {lines[0][:40]!r}")
    rest = head[1:]
    k = 1
    if not rest:
        if len(lines) < 2:
            raise MeshFileError(f"{name}: OFF header has no vertex/face counts")
        rest, k = lines[1].split(), 2
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        raise MeshFileError(f"{name}: bad OFF counts line {' '.join(rest)!r}") from None
    if nv < 0 or nf < 0 or len(lines) < k + nv + nf:
        raise MeshFileError(
            f"{name}: OFF header promises {nv} vertices and {nf} faces, the file has "
            f"{len(lines) - k} data lines (truncated?)"
        )
    try:
        v = np.array([ln.split()[:3] for ln in lines[k : k + nv]], dtype=np.float64)
    except ValueError as e:
        raise MeshFileError(f"{name}: bad vertex line in OFF: {e}") from None
    v = v.reshape(-1, 3)
    tris = []
    for i, ln in enumerate(lines[k + nv : k + nv + nf]):
        parts = ln.split()
        try:
            n = int(parts[0])
            idx = [int(x) for x in parts[1 : 1 + n]]
        except (ValueError, IndexError):
            raise MeshFileError(f"{name}: bad face line {i} in OFF: {ln[:60]!r}") from None
        if len(idx) != n or n < 3:
            raise MeshFileError(f"{name}: face {i} has {len(idx)} of {n} indices (needs >= 3)")
        for j in range(1, n - 1):
            tris.append((idx[0], idx[j], idx[j + 1]))
    f = np.array(tris, dtype=np.int64).reshape(-1, 3)
    return v, f


def _via_trimesh(data: bytes, ext: str, name: str):
    import trimesh

    try:
        return trimesh.load(io.BytesIO(data), file_type=ext, process=False)
    except Exception as e:  # noqa: BLE001 - trimesh raises many types on malformed files
        raise MeshFileError(f"{name}: cannot read as {ext.upper()}: {e}") from None


def _check_mesh(v: np.ndarray, f: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(v, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise MeshFileError(f"{name}: no faces (a point cloud? read it with load_points)")
    if not np.isfinite(v).all():
        raise MeshFileError(f"{name}: {int((~np.isfinite(v)).any(1).sum())} vertices are NaN/inf")
    if f.min() < 0 or f.max() >= len(v):
        raise MeshFileError(f"{name}: faces index vertex {int(f.max())} of {len(v)}")
    return v, f


def load_mesh(src: Any, file_type: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh (OBJ / PLY / OFF / STL / glTF; polygons are triangulated).
    ``src``: a path, or bytes with ``file_type``. Returns (vertices (V, 3) float64,
    faces (F, 3) int64), exactly as stored (no merging: see :func:`curate`)."""
    data, name = _read_bytes(src)
    ext = _kind(name, file_type, MESH_TYPES)
    if ext == "off":
        return _check_mesh(*_parse_off(data, name), name)
    m = _via_trimesh(data, ext, name)
    if hasattr(m, "dump") and not hasattr(m, "faces"):  # a Scene: concatenate its meshes
        parts = [g for g in m.dump() if hasattr(g, "faces")]
        if not parts:
            raise MeshFileError(f"{name}: the scene holds no triangle mesh")
        import trimesh

        m = trimesh.util.concatenate(parts)
    if not hasattr(m, "faces"):
        raise MeshFileError(f"{name}: no faces (a point cloud? read it with load_points)")
    return _check_mesh(m.vertices, m.faces, name)


def load_points(
    src: Any, file_type: str | None = None, n_sample: int = 4096, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a point cloud: (points (N, 3) float64, normals (N, 3) or None when the file has
    none -- :func:`tenfold.mesh.estimate_normals` fills them in). PLY with or without
    ``nx ny nz``, XYZ/TXT columns ``x y z [nx ny nz]``, NPY (N, 3|6), NPZ with ``points``
    [and ``normals``]. A file that holds a mesh is sampled on its surface (``n_sample``
    points with the face normals)."""
    data, name = _read_bytes(src)
    ext = _kind(name, file_type, POINT_TYPES)
    pts = nrm = None
    if ext in ("xyz", "txt"):
        try:
            a = np.loadtxt(io.StringIO(data.decode("utf-8")), ndmin=2)
        except (ValueError, UnicodeDecodeError) as e:
            raise MeshFileError(f"{name}: cannot read columns x y z [nx ny nz]: {e}") from None
        if a.shape[1] not in (3, 6):
            raise MeshFileError(f"{name}: expected 3 or 6 columns, got {a.shape[1]}")
        pts, nrm = a[:, :3], (a[:, 3:6] if a.shape[1] == 6 else None)
    elif ext in ("npy", "npz"):
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise MeshFileError(f"{name}: not a numpy file: {e}") from None
        if ext == "npz":
            if "points" not in z:
                raise MeshFileError(f"{name}: an NPZ point file needs a 'points' array")
            pts, nrm = z["points"], z.get("normals")
        else:
            if z.ndim != 2 or z.shape[1] not in (3, 6):
                raise MeshFileError(f"{name}: expected an (N, 3) or (N, 6) array, got {z.shape}")
            pts, nrm = z[:, :3], (z[:, 3:6] if z.shape[1] == 6 else None)
    else:
        if ext == "off":
            try:
                v, f = _parse_off(data, name)
            except MeshFileError:
                raise
            if len(f):
                return _sample_file_mesh(v, f, n_sample, seed)
            pts = v
        else:
            m = _via_trimesh(data, ext, name)
            if hasattr(m, "faces") and len(m.faces):
                return _sample_file_mesh(
                    np.asarray(m.vertices), np.asarray(m.faces), n_sample, seed
                )
            pts = np.asarray(getattr(m, "vertices", np.zeros((0, 3))))
            if ext == "ply":
                nrm = _ply_normals(data)
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 3:
        raise MeshFileError(f"{name}: {len(pts)} point(s); a point cloud needs at least 3")
    if not np.isfinite(pts).all():
        raise MeshFileError(f"{name}: {int((~np.isfinite(pts)).any(1).sum())} points are NaN/inf")
    if nrm is not None:
        nrm = np.asarray(nrm, dtype=np.float64).reshape(-1, 3)
        if len(nrm) != len(pts) or not np.isfinite(nrm).all():
            raise MeshFileError(f"{name}: normals must be finite and one per point")
        n = np.linalg.norm(nrm, axis=1, keepdims=True)
        if (n < 1e-12).any():
            nrm = None  # zero normals are no normals: estimate them instead
        else:
            nrm = nrm / n
    return pts, nrm


def _ply_normals(data: bytes) -> np.ndarray | None:
    """The ``nx ny nz`` vertex properties of a PLY file, or None."""
    from trimesh.exchange.ply import load_ply

    try:
        kw = load_ply(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - the vertices were read; normals are optional
        return None
    nrm = kw.get("vertex_normals")
    if nrm is None:
        attrs = kw.get("vertex_attributes") or {}
        if all(k in attrs for k in ("nx", "ny", "nz")):
            nrm = np.stack([attrs["nx"], attrs["ny"], attrs["nz"]], 1)
    return None if nrm is None else np.asarray(nrm, dtype=np.float64)


def _sample_file_mesh(v, f, n, seed):
    from .points import sample_surface

    v, f = _check_mesh(v, f, "mesh")
    return sample_surface(v, f, n, seed=seed)


def save_mesh(path: Any, vertices: Any, faces: Any) -> Path:
    """Write an OBJ, PLY (ASCII) or OFF file atomically (by the suffix)."""
    from ..core.io import atomic_write_text

    p = Path(path)
    ext = _kind(str(p), None, ("obj", "ply", "off"))
    v = check_array("vertices", vertices, ndim=2)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertex {int(f.max())} of {len(v)}")
    vs = "\n".join(f"{a:.6g} {b:.6g} {c:.6g}" for a, b, c in v.tolist())
    if ext == "obj":
        fs = "\n".join(f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f.tolist())
        body = "# tenfold.mesh\n" + "\n".join("v " + ln for ln in vs.split("\n")) + "\n" + fs + "\n"
    elif ext == "off":
        fs = "\n".join(f"3 {a} {b} {c}" for a, b, c in f.tolist())
        body = f"OFF\n{len(v)} {len(f)} 0\n{vs}\n{fs}\n"
    else:
        fs = "\n".join(f"3 {a} {b} {c}" for a, b, c in f.tolist())
        body = (
            "ply\nformat ascii 1.0\ncomment tenfold.mesh\n"
            f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
            f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
            f"{vs}\n{fs}\n"
        )
    atomic_write_text(p, body)
    return p


def save_points(path: Any, points: Any, normals: Any = None) -> Path:
    """Write a point cloud as ASCII PLY (with ``nx ny nz`` when normals are given)."""
    from ..core.io import atomic_write_text

    p = Path(path)
    pts = check_array("points", points, ndim=2)
    cols = [pts]
    props = "property float x\nproperty float y\nproperty float z\n"
    if normals is not None:
        cols.append(check_array("normals", normals, ndim=2))
        props += "property float nx\nproperty float ny\nproperty float nz\n"
    a = np.concatenate(cols, 1)
    rows = "\n".join(" ".join(f"{x:.6g}" for x in r) for r in a.tolist())
    body = f"ply\nformat ascii 1.0\nelement vertex {len(a)}\n{props}end_header\n{rows}\n"
    atomic_write_text(p, body)
    return p


# ----------------------------------------------------------------------------------------
# The real meshes
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshSource:
    """One shipped mesh: ``load()`` -> (vertices, faces)."""

    name: str
    origin: str  # "cgal" or "pyvista"
    licence: str
    _load: Callable[[], tuple[np.ndarray, np.ndarray]]

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load()


def _pyvista_dir() -> Path | None:
    spec = importlib.util.find_spec("pyvista")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "examples"
    return d if d.is_dir() else None


def missing_data_hint() -> str:
    """What to install for the real meshes, or "" when both sources are present."""
    hints = []
    if not CGAL_DATA.exists():
        hints.append("sudo apt-get install libcgal-demo (CGAL's 143 example meshes)")
    if _pyvista_dir() is None:
        hints.append("pip install --no-deps pyvista (4 example PLY meshes)")
    return "; ".join(hints)


def real_meshes(include_points: bool = False) -> list[MeshSource]:
    """Every shipped mesh file (CGAL's data, then pyvista's), sorted by name within each.
    Files that hold only points (CGAL's b9.ply, bunny00.off) are left out unless
    ``include_points``; files that fail to parse raise on ``load()``."""
    out: list[MeshSource] = []
    if CGAL_DATA.exists():
        for base in sorted(_cgal_files()):
            if base.rsplit(".", 1)[-1].lower() not in MESH_TYPES:
                continue
            if not include_points and base in ("b9.ply", "bunny00.off"):
                continue
            lic = (
                "Stanford 3D Scanning Repository terms"
                if base.lower().startswith(STANFORD)
                else "CC0 1.0"
            )
            out.append(MeshSource(base, "cgal", lic, _cgal_loader(base)))
    d = _pyvista_dir()
    if d is not None:
        for p in sorted(d.glob("*.ply")):
            out.append(MeshSource(p.name, "pyvista", "MIT (pyvista)", _file_loader(p)))
    return out


@functools.lru_cache(maxsize=2)
def _cgal_files(path: Path = CGAL_DATA) -> dict[str, bytes]:
    """name -> bytes of every file under data/meshes/ (one pass over the archive)."""
    out = {}
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isfile() and m.name.startswith("data/meshes/") and "/" not in m.name[12:]:
                out[m.name[12:]] = tar.extractfile(m).read()
    return out


def _cgal_loader(base: str):
    return lambda: load_mesh(_cgal_files()[base], file_type=base.rsplit(".", 1)[-1])


def _file_loader(p: Path):
    return lambda: load_mesh(p)


def cgal_bytes(name: str) -> bytes:
    """The raw bytes of one file of CGAL's data/meshes (e.g. the point cloud b9.ply)."""
    if not CGAL_DATA.exists():
        raise FileNotFoundError(f"{CGAL_DATA} missing: {missing_data_hint()}")
    files = _cgal_files()
    if name not in files:
        raise FileNotFoundError(f"{name} is not in {CGAL_DATA}")
    return files[name]


# ----------------------------------------------------------------------------------------
# Curation, decimation, augmentation, split
# ----------------------------------------------------------------------------------------


def curate(
    vertices: Any, faces: Any, min_faces: int = 4, max_faces: int | None = None, tol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray, str]:
    """Merge vertices closer than ``tol`` (relative to the bounding box), drop degenerate
    faces (a repeated vertex, or zero area) and exact duplicates, and check the face count.
    Returns (vertices, faces, reason) with reason "" when the mesh is kept, else why not."""
    v = check_array("vertices", vertices, ndim=2).astype(np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    ext = float(np.ptp(v, axis=0).max()) if len(v) else 0.0
    if ext <= 0:
        return v, f[:0], "all vertices coincide"
    key = np.round((v - v.min(0)) / (ext * max(tol, 1e-15))).astype(np.int64)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    v2 = v[first]
    f2 = inv[f]
    area = np.linalg.norm(
        np.cross(v2[f2[:, 1]] - v2[f2[:, 0]], v2[f2[:, 2]] - v2[f2[:, 0]]), axis=1
    )
    ok = (f2[:, 0] != f2[:, 1]) & (f2[:, 1] != f2[:, 2]) & (f2[:, 0] != f2[:, 2])
    ok &= area > (ext**2) * 1e-14
    f2 = f2[ok]
    if len(f2):
        k = np.argmin(f2, 1)
        rot = np.take_along_axis(f2, (k[:, None] + np.arange(3)) % 3, 1)
        _, keep = np.unique(rot, axis=0, return_index=True)
        f2 = f2[np.sort(keep)]
    used = np.unique(f2)
    remap = -np.ones(len(v2), dtype=np.int64)
    remap[used] = np.arange(len(used))
    v3, f3 = v2[used], remap[f2]
    if len(f3) < min_faces:
        return v3, f3, f"{len(f3)} faces after clean-up (< {min_faces})"
    if max_faces is not None and len(f3) > max_faces:
        return v3, f3, f"{len(f3)} faces (> {max_faces})"
    return v3, f3, ""


def decimate(vertices: Any, faces: Any, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation (fast-simplification) to at most ``max_faces`` faces; a mesh
    already within budget is returned unchanged."""
    max_faces = int(check_number("max_faces", max_faces, ">=4", integer=True))
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) <= max_faces:
        return v, f
    import fast_simplification

    target = 1.0 - max_faces / len(f)
    for _ in range(6):
        v2, f2 = fast_simplification.simplify(
            v.astype(np.float32), f.astype(np.int32), target_reduction=float(target)
        )
        if len(f2) <= max_faces:
            break
        target = min(0.999, target + (len(f2) - max_faces) / len(f))
    return np.asarray(v2, dtype=np.float64), np.asarray(f2, dtype=np.int64)


def random_rotation(rng: np.random.Generator, max_angle: float = np.pi) -> np.ndarray:
    """A rotation matrix about a uniformly random axis by an angle in [-max_angle, max_angle]."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = rng.uniform(-max_angle, max_angle)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def augment(
    vertices: Any,
    rng: np.random.Generator,
    max_angle: float = np.pi,
    scale: tuple[float, float] = (0.85, 1.15),
) -> np.ndarray:
    """A random rotation (about a random axis, up to ``max_angle``) and per-axis scale in
    ``scale``; faces are unchanged."""
    v = np.asarray(vertices, dtype=np.float64)
    R = random_rotation(rng, max_angle)
    s = rng.uniform(scale[0], scale[1], size=3)
    return (v @ R.T) * s


def split_by_mesh(names: list[str], val_frac: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """(train names, validation names): a seeded split of the meshes themselves, so every
    augmented copy of a validation mesh stays out of training."""
    check_number("val_frac", val_frac, "[0,1)")
    uniq = sorted(set(names))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(uniq))
    n_val = max(1, round(val_frac * len(uniq))) if val_frac > 0 and len(uniq) > 1 else 0
    val = {uniq[i] for i in perm[:n_val]}
    return [n for n in uniq if n not in val], [n for n in uniq if n in val]
