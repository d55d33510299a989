"""Mesh and point files, the shipped real meshes, curation, decimation, augmentation, the
split by mesh, the dataset, surface sampling, normal estimation and the 3-D scores."""

import numpy as np
import pytest

from tenfold.mesh.data import (
    MeshFileError,
    augment,
    cgal_bytes,
    curate,
    decimate,
    load_mesh,
    load_points,
    real_meshes,
    save_mesh,
    save_points,
    split_by_mesh,
)
from tenfold.mesh.points import estimate_normals, sample_surface
from tenfold.mesh.scores import WEIGHTS, edge_stats, score_mesh

HAVE_REAL = bool(real_meshes())
needs_real = pytest.mark.skipif(not HAVE_REAL, reason="no shipped meshes (make install)")


def _tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, f


def _sphere(n=12):
    """A closed UV sphere."""
    th, ph = np.meshgrid(np.linspace(0, np.pi, n)[1:-1], np.linspace(0, 2 * np.pi, 2 * n)[:-1])
    th, ph = th.T.ravel(), ph.T.ravel()
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], 1)
    v = np.concatenate([[[0, 0, 1]], v, [[0, 0, -1]]])
    rows, cols = n - 2, 2 * n - 1
    f = []
    idx = lambda r, c: 1 + r * cols + c % cols  # noqa: E731
    for c in range(cols):
        f.append([0, idx(0, c), idx(0, c + 1)])
        f.append([len(v) - 1, idx(rows - 1, c + 1), idx(rows - 1, c)])
        for r in range(rows - 1):
            f += [
                [idx(r, c), idx(r + 1, c), idx(r + 1, c + 1)],
                [idx(r, c), idx(r + 1, c + 1), idx(r, c + 1)],
            ]
    return v, np.array(f)


@pytest.mark.parametrize("ext", ["obj", "ply", "off"])
def test_save_and_load_mesh_round_trip(tmp_path, ext):
    v, f = _tetra()
    p = save_mesh(tmp_path / f"t.{ext}", v, f)
    v2, f2 = load_mesh(p)
    np.testing.assert_allclose(v2, v, atol=1e-6)
    np.testing.assert_array_equal(f2, f)


def test_off_polygons_are_fan_triangulated_and_comments_skipped():
    data = b"OFF # a quad\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"
    v, f = load_mesh(data, file_type="off")
    assert f.tolist() == [[0, 1, 2], [0, 2, 3]] and v.shape == (4, 3)


@pytest.mark.parametrize(
    "data, ext, match",
    [
        (b"", "off", "empty"),
        (b"OFF\n4 2 0\n0 0 0\n1 0 0\n", "off", "truncated"),
        (b"PLY\n", "off", "starts with 'OFF'"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\nnan 1 0\n3 0 1 2\n", "off", "NaN"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "off", "index"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 x 2\n", "off", "bad face line"),
        (b"OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", "off", "no faces"),
        (b"\x00\x01garbage", "ply", "cannot read|no faces"),
        (b"v 0 0 0\n", "xyz3", "unknown file type"),
    ],
)
def test_bad_mesh_files_name_the_problem(data, ext, match):
    with pytest.raises(MeshFileError, match=match):
        load_mesh(data, file_type=ext)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MeshFileError, match="no such file"):
        load_mesh(tmp_path / "nope.obj")
    with pytest.raises(MeshFileError, match="directory"):
        load_mesh(tmp_path)


def test_points_with_and_without_normals(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 3))
    n = p / np.linalg.norm(p, axis=1, keepdims=True)
    save_points(tmp_path / "a.ply", p, n)
    save_points(tmp_path / "b.ply", p)
    np.savetxt(tmp_path / "c.xyz", p)
    np.save(tmp_path / "d.npy", np.concatenate([p, n], 1))
    pa, na = load_points(tmp_path / "a.ply")
    np.testing.assert_allclose(pa, p, atol=1e-5)
    np.testing.assert_allclose(na, n, atol=1e-5)
    for name in ("b.ply", "c.xyz"):
        pb, nb = load_points(tmp_path / name)
        assert nb is None and pb.shape == (50, 3)
    assert load_points(tmp_path / "d.npy")[1] is not None
    # a mesh file gives points on its surface with face normals
    v, f = _tetra()
    save_mesh(tmp_path / "t.obj", v, f)
    pm, nm = load_points(tmp_path / "t.obj", n_sample=100)
    assert pm.shape == (100, 3) and np.allclose(np.linalg.norm(nm, axis=1), 1)


@pytest.mark.parametrize(
    "content, name, match",
    [
        (b"1 2\n3 4\n", "x.xyz", "3 or 6 columns"),
        (b"1 2 3\n", "x.xyz", "at least 3"),
        (b"1 2 nan\n1 1 1\n2 2 2\n", "x.xyz", "NaN"),
        (b"not numbers\n", "x.txt", "cannot read"),
    ],
)
def test_bad_point_files(tmp_path, content, name, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MeshFileError, match=match):
        load_points(tmp_path / name)


@needs_real
def test_the_shipped_meshes_and_a_real_cloud_without_normals():
    srcs = real_meshes()
    names = {s.name for s in srcs}
    assert {"cow.off", "elephant.off", "ant.ply", "airplane.ply"} <= names
    assert len(srcs) >= 100 and {s.origin for s in srcs} == {"cgal", "pyvista"}
    assert all(s.licence for s in srcs)
    p, n = load_points(cgal_bytes("b9.ply"), file_type="ply")
    assert n is None and len(p) > 1000  # a scan without normals (the DeepMesh #29 case)


def test_curate_merges_drops_and_filters():
    v, f = _tetra()
    v = np.concatenate([v, v[:1]])  # a duplicate vertex
    f = np.concatenate([f, [[4, 1, 2]], [[0, 0, 1]], [[0, 2, 1]]])  # uses it; degenerate; dup
    v2, f2, why = curate(v, f, min_faces=4)
    assert why == "" and len(f2) == 5 and len(v2) == 4  # (4,1,2) became (0,1,2): a new face
    _, _, why = curate(v, f, min_faces=10)
    assert "< 10" in why
    _, _, why = curate(v, f, max_faces=3)
    assert "> 3" in why
    _, _, why = curate(np.zeros((3, 3)), [[0, 1, 2]])
    assert why == "all vertices coincide"


def test_decimate_to_a_face_budget():
    v, f = _sphere(16)
    v2, f2 = decimate(v, f, 100)
    assert len(f2) <= 100 and len(f2) > 40 and f2.max() < len(v2)
    assert decimate(v, f, 10_000)[1] is f or len(decimate(v, f, 10_000)[1]) == len(f)
    with pytest.raises(ValueError, match="max_faces"):
        decimate(v, f, 2)


def test_augment_rotates_and_scales_but_keeps_the_shape_class():
    rng = np.random.default_rng(0)
    v, _ = _sphere()
    a = augment(v, rng, scale=(1.0, 1.0))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-12)  # pure rotation
    assert not np.allclose(a, v)


def test_split_is_by_mesh_and_seeded():
    names = [f"m{i}" for i in range(20)]
    tr, va = split_by_mesh(names * 3, 0.25, seed=1)
    assert len(va) == 5 and not set(tr) & set(va) and set(tr) | set(va) == set(names)
    assert split_by_mesh(names, 0.25, seed=1) == (tr, va)
    with pytest.raises(ValueError, match="val_frac"):
        split_by_mesh(names, 1.5)


def test_sample_surface_is_on_the_surface_with_unit_normals():
    v, f = _sphere(24)
    p, n = sample_surface(v, f, 500, seed=0)
    r = np.linalg.norm(p, axis=1)
    assert r.max() <= 1 + 1e-9 and r.min() > 0.97
    assert np.allclose(np.linalg.norm(n, axis=1), 1)
    assert (np.sum(n * p, 1) > 0).mean() > 0.99  # outward (counter-clockwise faces)
    np.testing.assert_array_equal(
        sample_surface(v, f, 10, seed=3)[0], sample_surface(v, f, 10, seed=3)[0]
    )
    with pytest.raises(ValueError, match="zero area"):
        sample_surface(np.zeros((3, 3)), [[0, 1, 2]], 5)


def test_estimated_normals_match_the_true_ones():
    v, f = _sphere(24)
    p, n = sample_surface(v, f, 2000, seed=1)
    est = estimate_normals(p)
    cos = np.sum(est * n, 1)
    assert np.median(cos) > 0.97  # oriented outward, not just parallel
    with pytest.raises(ValueError, match="at least 3"):
        estimate_normals(p[:2])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        estimate_normals(p[:, :2])


def test_edge_stats_hand_cases():
    _, f = _tetra()
    assert edge_stats(f) == (6, 0, 0)  # closed, manifold
    assert edge_stats(f[:1]) == (3, 3, 0)  # one face: all boundary
    fan = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])  # edge (0, 1) in three faces
    assert edge_stats(fan)[2] == 1
    assert edge_stats(np.zeros((0, 3))) == (0, 0, 0)


def test_scores_rank_a_good_mesh_above_a_bad_one():
    v, f = _sphere(16)
    p, n = sample_surface(v, f, 1000, seed=2)
    good = score_mesh(v, f, p, n)
    shifted = score_mesh(v + 0.3, f, p, n)
    holey = score_mesh(v, f[::2], p, n)
    empty = score_mesh(np.zeros((0, 3)), np.zeros((0, 3)), p, n)
    assert good.chamfer < 0.05 and good.boundary_fraction == 0 and good.valid
    assert good.normal_consistency > 0.95
    assert good.combined < holey.combined < empty.combined
    assert good.combined < shifted.combined < empty.combined
    assert not empty.valid and empty.n_faces == 0
    # combined is the stated weighted sum
    s = good
    want = (WEIGHTS["chamfer"] * s.chamfer + WEIGHTS["hausdorff"] * s.hausdorff
            + WEIGHTS["normal_inconsistency"] * (1 - s.normal_consistency)
            + WEIGHTS["boundary_fraction"] * s.boundary_fraction
            + WEIGHTS["nonmanifold_fraction"] * s.nonmanifold_fraction)  # fmt: skip
    assert s.combined == pytest.approx(want)
    with pytest.raises(ValueError, match="NaN"):
        score_mesh(v * np.nan, f, p, n)
    with pytest.raises(ValueError):
        score_mesh(v, f, p[:, :2] * np.nan, n)


@needs_real
def test_dataset_is_curated_split_by_mesh_and_tokenised():
    from tenfold.mesh.dataset import MeshDataConfig, build_dataset
    from tenfold.mesh.tokenizer import MeshTokenizer

    ds = build_dataset(MeshDataConfig(max_faces=32, n_aug=2, n_points=64))
    s = ds.summary()
    assert s["kept"] >= 80 and s["sources"] == len(real_meshes())
    assert not {e.name for e in ds.train} & {e.name for e in ds.val}
    dup = [r for r in ds.curation if r["reason"].startswith("duplicate of")]
    assert dup, "sphere.off / sphere.ply and friends are one mesh"
    tok = MeshTokenizer()
    for e in ds.train[:20]:
        r = tok.decode_full(e.tokens, strict=True)
        assert len(r.faces) == e.n_faces <= 32
        assert e.points.shape == (64, 3) and e.points.dtype == np.float32
        assert np.abs(e.points).max() <= 0.96  # the normalised frame
    with pytest.raises(Exception, match="max_faces"):
        MeshDataConfig(max_faces=0)
