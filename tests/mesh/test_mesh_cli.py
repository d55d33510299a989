"""``tenfold mesh tokenize`` and ``tenfold mesh sample`` (a real scan without normals)."""

import numpy as np
import pytest

from tenfold.cli import main
from tenfold.mesh.data import cgal_bytes, load_mesh, real_meshes, save_mesh, save_points

needs_real = pytest.mark.skipif(not real_meshes(), reason="no shipped meshes (make install)")


def _tetra(tmp_path, name="t.obj"):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return save_mesh(tmp_path / name, v, f)


def test_tokenize_prints_tokens_per_face_and_writes_npy(tmp_path, capsys):
    p = _tetra(tmp_path)
    assert main(["mesh", "tokenize", str(p), "-o", str(tmp_path / "t.npy")]) == 0
    out = capsys.readouterr().out
    assert "4 faces read, 4 after clean-up" in out and "tokens/face" in out
    tokens = np.load(tmp_path / "t.npy")
    from tenfold.mesh import MeshTokenizer

    v, f = MeshTokenizer().decode(tokens, strict=True)
    assert len(f) == 4
    assert main(["mesh", "tokenize", str(p), "--tokenizer", "naive"]) == 0
    assert "9.000 tokens/face" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["mesh", "tokenize", "missing.obj"], "no such file"),
        (["mesh", "tokenize", "{tmp}/x.abc"], "unknown file type"),
        (["mesh", "sample", "--cond", "missing.ply", "-o", "{tmp}/o.obj"], "no such file"),
        (["mesh", "sample", "--cond", "{tmp}/p.xyz", "-o", "{tmp}/o.stl"], ".obj, .ply or .off"),
        (["mesh", "sample", "--cond", "{tmp}/p.xyz", "-o", "{tmp}/o.obj", "--preset", "big"], "preset"),
        (["mesh", "sample", "--cond", "{tmp}/p.xyz", "-o", "{tmp}/o.obj", "--weights", "{tmp}/w.st"], "no such checkpoint"),
        (["mesh", "sample", "--cond", "{tmp}/p.xyz", "-o", "{tmp}/o.obj", "--points", "1"], "--points"),
    ],
)  # fmt: skip
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, args, needle):
    (tmp_path / "x.abc").write_text("?")
    np.savetxt(tmp_path / "p.xyz", np.random.default_rng(0).normal(size=(30, 3)))
    rc = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err


def test_sample_with_a_saved_generator_and_a_cloud_with_normals(tmp_path, capsys):
    import torch

    from tenfold.mesh.model import MeshGenConfig, MeshGenerator, save_generator

    torch.manual_seed(0)
    save_generator(tmp_path / "g.safetensors", MeshGenerator(MeshGenConfig(
        levels=64, split=(4, 16), n_cond=4, n_layer=1, n_heads=2, head_dim=8, block_size=68)))  # fmt: skip
    rng = np.random.default_rng(0)
    p = rng.normal(size=(100, 3))
    save_points(tmp_path / "c.ply", p * 10 + 5, p / np.linalg.norm(p, axis=1, keepdims=True))
    rc = main(["mesh", "sample", "--cond", str(tmp_path / "c.ply"), "-o", str(tmp_path / "o.ply"),
               "--weights", str(tmp_path / "g.safetensors"), "--quiet", "--max-new-tokens", "40"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0 and "estimating" not in cap.err, cap.err
    v, f = load_mesh(tmp_path / "o.ply")
    assert len(f) >= 1
    c = p * 10 + 5  # written back in the cloud's own frame: inside its box, grown by 1/0.95
    centre, half = (c.min(0) + c.max(0)) / 2, np.ptp(c, axis=0).max() / 2
    assert np.abs(v - centre).max() <= half / 0.95 * (1 + 1e-4)
    assert np.abs(v - centre).max() > half / 10  # not left in the unit frame


@needs_real
@pytest.mark.slow
def test_sample_a_real_scan_without_normals(tmp_path, capsys):
    """CGAL's b9.ply: 22,300 scanned points, no normals (the DeepMesh #29 failure)."""
    (tmp_path / "b9.ply").write_bytes(cgal_bytes("b9.ply"))
    out = tmp_path / "b9.obj"
    rc = main(["mesh", "sample", "--cond", str(tmp_path / "b9.ply"), "-o", str(out),
               "--preset", "quick", "--quiet"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "no normals in the file; estimating them" in cap.err
    assert "complete" in cap.out and "Chamfer" in cap.out
    v, f = load_mesh(out)
    assert len(f) >= 1 and np.isfinite(v).all()
