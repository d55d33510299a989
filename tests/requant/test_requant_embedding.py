"""Embedding (and tied readout) quantization: QuantEmbedding's lookup, the tie kept in value,
bits accounting, save -> load, and the errors a user can hit."""

import pytest
import torch
import torch.nn as nn

from tenfold.core.io import CheckpointError
from tenfold.core.models.lm import LM, LMConfig
from tenfold.requant import (
    QuantEmbedding,
    QuantLinear,
    RequantConfig,
    load_quantized,
    model_bits_per_weight,
    quantize_,
    save_quantized,
    select_embeddings,
)
from tenfold.requant import grid as G


def _lm(tie=True, seed=0):
    torch.manual_seed(seed)
    return LM(LMConfig(vocab_size=32, block_size=16, n_layer=1, n_heads=2, head_dim=16,
                       tie_embeddings=tie))  # fmt: skip


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, 32, (16, 17), generator=torch.Generator().manual_seed(3))


def test_embedding_lookup_is_the_rtn_table():
    torch.manual_seed(0)
    emb = nn.Embedding(40, 32, padding_idx=3)
    m = nn.Sequential()
    m.add_module("emb", emb)
    w = emb.weight.detach().clone()
    names = quantize_(m, RequantConfig(base="rtn", bits=3, group_size=16, embeddings=True),
                      torch.zeros(1, 4, dtype=torch.long), loss_fn=lambda mm, b: mm(b).sum())  # fmt: skip
    assert names == ["emb"] and isinstance(m.emb, QuantEmbedding)
    table = G.rtn(w, 3, 16)
    idx = torch.tensor([[0, 5, 39], [3, 3, 1]])
    assert torch.equal(m.emb(idx), table[idx])
    assert m.emb.padding_idx == 3 and m.emb.num_embeddings == 40 and m.emb.embedding_dim == 32
    # 3-bit codes + an fp16 scale and a 3-bit zero per 16 values
    assert m.emb.bits_per_weight == pytest.approx(3 + (16 + 3) / 16)


def test_embedding_outliers_are_kept_exactly():
    torch.manual_seed(1)
    emb = nn.Embedding(64, 32)
    with torch.no_grad():
        emb.weight[7, 4] = 40.0  # far outside the rest
    m = nn.Sequential()
    m.add_module("emb", emb)
    quantize_(m, RequantConfig(base="rtn", bits=2, group_size=32, outlier_ratio=0.01,
                               embeddings=True), torch.zeros(1, 2, dtype=torch.long),
              loss_fn=lambda mm, b: mm(b).sum())  # fmt: skip
    assert m.emb.nnz == round(0.01 * 64 * 32)
    assert float(m.emb(torch.tensor([7]))[0, 4]) == 40.0


def test_tied_readout_and_embedding_stay_equal(calib):
    m = _lm(tie=True)
    cfg = RequantConfig(base="gptq", bits=3, group_size=16, skip=(), embeddings=True,
                        calib_size=8)  # fmt: skip
    names = quantize_(m, cfg, calib)
    assert "lm_head" in names and "tok_emb" in names
    assert isinstance(m.lm_head, QuantLinear) and isinstance(m.tok_emb, QuantEmbedding)
    assert torch.equal(m.tok_emb.dequantize(), m.lm_head.dequantize())  # the tie, in value


def test_untied_embedding_is_rtn_and_linear_only_by_default(calib):
    m = _lm(tie=False)
    names = quantize_(m, RequantConfig(base="rtn", bits=4, group_size=16, calib_size=8), calib)
    assert "tok_emb" not in names and isinstance(m.tok_emb, nn.Embedding)
    m2 = _lm(tie=False)
    w = m2.tok_emb.weight.detach().clone()
    names = quantize_(m2, RequantConfig(base="gptq", bits=4, group_size=16, calib_size=8,
                                        embeddings=True), calib)  # fmt: skip
    assert "tok_emb" in names
    assert torch.equal(m2.tok_emb.dequantize(), G.rtn(w, 4, 16))  # RTN whatever the base
    assert select_embeddings(_lm(), skip=("tok_emb",)) == []


def test_save_load_with_embeddings_is_bit_identical(tmp_path, calib):
    m = _lm(tie=False)
    cfg = RequantConfig(base="awq", bits=3, group_size=16, skip=(), embeddings=True,
                        outlier_ratio=0.01, calib_size=8)  # fmt: skip
    quantize_(m, cfg, calib)
    x = calib[:4, :-1]
    with torch.no_grad():
        y = m(x)[0]
    p = tmp_path / "q.safetensors"
    save_quantized(m, p)
    fresh = _lm(tie=False, seed=5)
    names = load_quantized(fresh, p)
    assert "tok_emb" in names and isinstance(fresh.tok_emb, QuantEmbedding)
    with torch.no_grad():
        assert torch.equal(fresh(x)[0], y)
    assert model_bits_per_weight(fresh) == model_bits_per_weight(m)


def test_load_refuses_an_embedding_into_a_linear(tmp_path, calib):
    m = _lm(tie=False)
    quantize_(m, RequantConfig(base="rtn", bits=4, group_size=16, embeddings=True), calib)
    p = tmp_path / "q.safetensors"
    save_quantized(m, p)
    other = _lm(tie=False)
    other.tok_emb = nn.Linear(16 * 2, 32)
    with pytest.raises(CheckpointError, match="tok_emb is a Linear, not an embedding"):
        load_quantized(other, p)


def test_embedding_bad_inputs():
    emb = QuantEmbedding(10, 8, 4, 8)
    with pytest.raises(TypeError, match="integer indices"):
        emb(torch.zeros(2))
    with pytest.raises(IndexError, match=r"must lie in \[0, 10\)"):
        emb(torch.tensor([10]))
    with pytest.raises(ValueError, match="padding_idx 12 is outside"):
        QuantEmbedding(10, 8, 4, 8, padding_idx=12)
    with pytest.raises(ValueError, match="an embedding has no bias"):
        QuantEmbedding.from_parts(torch.zeros(10, 8, dtype=torch.long), 4, 8,
                                  scale=torch.ones(10, 1), zero=torch.zeros(10, 1),
                                  bias=torch.zeros(10))  # fmt: skip


def test_quantize_refuses_bad_embeddings():
    m = nn.Sequential()
    m.add_module("emb", nn.Embedding(10, 12, max_norm=1.0))
    kw = dict(loss_fn=lambda mm, b: mm(b).sum())
    x = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="max_norm"):
        quantize_(m, RequantConfig(base="rtn", group_size=4, embeddings=True), x, **kw)
    m.emb = nn.Embedding(10, 12)
    with pytest.raises(ValueError, match="group size 8 does not divide"):
        quantize_(m, RequantConfig(base="rtn", group_size=8, embeddings=True), x, **kw)
    with torch.no_grad():
        m.emb.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf weights"):
        quantize_(m, RequantConfig(base="rtn", group_size=4, embeddings=True), x, **kw)
    with pytest.raises(ValueError, match="no nn.Linear layer"):  # embeddings off: nothing
        quantize_(m, RequantConfig(base="rtn", group_size=4), x, **kw)
