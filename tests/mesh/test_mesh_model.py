"""The conditioned generator: shapes, the KV cache, constrained sampling (every sample a
mesh), nucleus filtering, training windows, checkpoints and bad inputs."""

import numpy as np
import pytest
import torch

from tenfold.core.io import CheckpointError, save_tensors
from tenfold.core.validate import ConfigError
from tenfold.mesh.model import (
    MeshGenConfig,
    MeshGenerator,
    load_generator,
    save_generator,
    top_p_filter,
    windows,
)

SMALL = MeshGenConfig(levels=64, split=(4, 16), n_cond=4, n_layer=2, n_heads=2, head_dim=8,
                      block_size=68)  # fmt: skip


def _gen(seed=0):
    torch.manual_seed(seed)
    return MeshGenerator(SMALL).eval()


def test_forward_shapes_and_the_loss_masks_padding():
    g = _gen()
    cond = torch.randn(2, 30, 6)
    tok = torch.randint(0, g.tokenizer.vocab_size, (2, 20))
    assert g(cond, tok).shape == (2, 20, g.tokenizer.vocab_size)
    mask = torch.ones(2, 20, dtype=torch.bool)
    full = g.loss(cond, tok, mask)
    mask[:, 10:] = False
    tok2 = tok.clone()
    tok2[:, 10:] = g.tokenizer.pad
    assert torch.allclose(g.loss(cond, tok, mask), g.loss(cond, tok2, mask))  # padding unseen
    assert not torch.allclose(full, g.loss(cond, tok, mask))
    lp = g.log_prob(cond, tok, mask)
    assert lp.shape == (2,) and (lp < 0).all()


def test_point_encoder_ignores_point_order_and_sees_the_cloud():
    g = _gen()
    cond = torch.randn(1, 40, 6)
    perm = cond[:, torch.randperm(40)]
    a, b = g.encoder(cond), g.encoder(perm)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert (g.encoder(cond + 0.5) - a).abs().max() > 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_constrained_samples_always_decode_and_close_within_the_budget(seed):
    g = _gen(seed)
    cond = torch.randn(3, 20, 6)
    budget = 25 + 7 * seed
    out = g.sample(cond, max_new_tokens=budget, generator=torch.Generator().manual_seed(seed))
    for s in out:
        assert s.report.valid and len(s.faces) >= 1, s.report
        assert len(s.tokens) <= budget + 1 and s.tokens[-1] == g.tokenizer.eos
        assert np.abs(s.vertices).max() <= 1


def test_raw_samples_of_an_untrained_model_are_decoded_leniently():
    g = _gen()
    out = g.sample(torch.randn(4, 20, 6), max_new_tokens=40, constrained=False,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert any(not s.report.valid for s in out)  # random tokens are rarely a mesh
    for s in out:
        assert s.faces.shape[1] == 3 and s.report.n_faces == len(s.faces)


def test_cache_and_recompute_agree_within_the_window_and_sampling_is_seeded():
    g = _gen()
    cond = torch.randn(2, 20, 6)
    a = g.sample(cond, max_new_tokens=50, temperature=0)
    b = g.sample(cond, max_new_tokens=50, temperature=0, use_cache=False)
    assert [s.tokens.tolist() for s in a] == [s.tokens.tolist() for s in b]
    s1 = g.sample(cond, 50, generator=torch.Generator().manual_seed(5))
    s2 = g.sample(cond, 50, generator=torch.Generator().manual_seed(5))
    assert [s.tokens.tolist() for s in s1] == [s.tokens.tolist() for s in s2]


def test_generation_slides_past_the_window():
    g = _gen()  # window 64 tokens
    out = g.sample(torch.randn(1, 20, 6), max_new_tokens=150, temperature=1.0,
                   generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert out[0].report.valid and len(out[0].faces) >= 1


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).sum() == 1  # the most likely always
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_windows_pad_short_and_crop_long_sequences():
    rng = np.random.default_rng(0)
    t, m = windows(np.arange(5), 8, rng, pad=99)
    assert t.tolist() == [0, 1, 2, 3, 4, 99, 99, 99, 99] and m.sum() == 5
    t, m = windows(np.arange(100), 8, rng, pad=99)
    assert len(t) == 9 and m.all() and (np.diff(t) == 1).all()
    with pytest.raises(ValueError, match="1-D integer"):
        windows(np.zeros((2, 3), dtype=np.int64), 8, rng, pad=99)
    with pytest.raises(ValueError, match="window"):
        windows(np.arange(5), 0, rng, pad=99)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    g = _gen()
    p = tmp_path / "gen.safetensors"
    save_generator(p, g)
    h = load_generator(p)
    cond = torch.randn(1, 10, 6)
    tok = torch.randint(0, g.tokenizer.vocab_size, (1, 12))
    torch.testing.assert_close(g(cond, tok), h(cond, tok))
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_generator(tmp_path / "bad.safetensors")
    save_tensors(tmp_path / "other.safetensors", {"x": torch.zeros(2)}, {"kind": "something"})
    with pytest.raises(CheckpointError, match="not a mesh generator"):
        load_generator(tmp_path / "other.safetensors")
    sd = {k: v for k, v in g.state_dict().items() if "encoder" not in k}
    save_tensors(tmp_path / "part.safetensors", sd,
                 {"kind": "tenfold.mesh.MeshGenerator", "config": {"n_layer": 2}})  # fmt: skip
    with pytest.raises(CheckpointError, match="do not match|bad generator config"):
        load_generator(tmp_path / "part.safetensors")


@pytest.mark.parametrize(
    "cond, tok, match",
    [
        (torch.randn(2, 10, 3), None, r"\(B, N, 6\)"),
        (torch.randn(10, 6), None, "cond"),
        (torch.randn(2, 10, 6) * np.nan, None, "NaN|finite"),
        (torch.randn(2, 10, 6), torch.zeros(3, 5, dtype=torch.long), "rows"),
        (torch.randn(2, 10, 6), torch.zeros(2, 5), "tokens"),
        (torch.randn(2, 10, 6), torch.full((2, 5), 10**6), "token ids"),
        (torch.randn(2, 10, 6), torch.zeros(2, 200, dtype=torch.long), "windows"),
    ],
)
def test_bad_inputs(cond, tok, match):
    g = _gen()
    with pytest.raises((ValueError, TypeError), match=match):
        if tok is None:
            g.sample(cond, max_new_tokens=20)
        else:
            g(cond, tok)


@pytest.mark.parametrize(
    "kw, match",
    [(dict(max_new_tokens=0), "max_new_tokens"), (dict(max_new_tokens=5), "at least"),
     (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
     (dict(top_p=float("nan")), "top_p")],
)  # fmt: skip
def test_bad_sampling_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        _gen().sample(torch.randn(1, 10, 6), **{"max_new_tokens": 20, **kw})


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(split=(4, 8)), "multiply"),
        (dict(block_size=10), "block_size"),
        (dict(n_layer=0), "n_layer"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        MeshGenConfig(**{**SMALL.__dict__, **kw})


def test_the_usage_block_of_docs_mesh_runs(capsys):
    """The usage block of docs/mesh.md runs as written (in ten lines or so)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "mesh.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 13
    exec(compile(code, "docs/mesh.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["24", "4", "True", "True"]
