"""quantize_ end to end on a small LM: the config's checks, the errors a user can hit, the
dense-and-sparse bookkeeping, and save -> load of a quantized model giving bit-identical
outputs."""

import copy
import json

import pytest
import torch
import torch.nn as nn

from tenfold.core.io import CheckpointError, load_tensors, save_tensors
from tenfold.core.models.lm import LM, LMConfig
from tenfold.core.validate import ConfigError
from tenfold.requant import (
    QuantLinear,
    RequantConfig,
    allocate_outliers,
    load_quantized,
    mean_loss,
    model_bits_per_weight,
    quantize_,
    save_quantized,
    select_layers,
)
from tenfold.requant import grid as G


def _lm(seed=0):
    torch.manual_seed(seed)
    return LM(LMConfig(vocab_size=32, block_size=16, n_layer=1, n_heads=2, head_dim=16))


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, 32, (16, 17), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(bits=1), r"bits must be in \[2,8\]"),
        (dict(bits=9), r"bits must be in \[2,8\]"),
        (dict(group_size=0), "group_size must be >= 1"),
        (dict(outlier_ratio=-0.1), "outlier_ratio must be a fraction"),
        (dict(outlier_ratio="most"), "outlier_ratio must be a fraction"),
        (dict(outlier_ratio=float("nan")), "outlier_ratio must be a fraction"),
        (dict(significant_ratio=0.6), "significant_ratio"),
        (dict(outlier_ratio=0.3, significant_ratio=0.3), "must stay below 0.5"),
        (dict(base="qtip"), "base must be one of"),
        (dict(quadrature="simpson"), "quadrature must be one of"),
        (dict(steps=0), "steps must be >= 1"),
        (dict(gptq_block=100), "power of two"),
    ],
)
def test_config_refuses_what_cannot_work(kw, match):
    with pytest.raises(ConfigError, match=match):
        RequantConfig(**kw)


def test_config_takes_auto_and_strings():
    c = RequantConfig(base="awq", outlier_ratio="auto", quadrature="left", group_size=None)
    assert c.outlier_ratio_value == 0.0045 and c.base.value == "awq"


def test_user_errors_name_the_problem(calib):
    m = _lm()
    with pytest.raises(ValueError, match="found no nn.Linear layer"):
        quantize_(m, RequantConfig(), calib, filter_fn=lambda mod, name: False)
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize_(m, RequantConfig(base="rtn", group_size=16), [])
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize_(m, RequantConfig(base="rtn", group_size=16), torch.zeros(0, 17))
    with pytest.raises(ValueError, match="group size 48 does not divide"):
        quantize_(m, RequantConfig(group_size=48), calib)
    bad = _lm()
    with torch.no_grad():
        bad.blocks[0].attn.q.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"blocks.0.attn.q has 1 NaN/inf weights"):
        quantize_(bad, RequantConfig(group_size=16), calib)
    with pytest.raises(TypeError, match="needs a RequantConfig"):
        quantize_(m, {"bits": 4}, calib)
    # nothing changed on any of these
    assert not any(isinstance(x, QuantLinear) for x in m.modules())


def test_quantize_replaces_the_selected_layers_and_keeps_the_readout(calib):
    m = _lm()
    names = quantize_(m, RequantConfig(base="rtn", bits=4, group_size=16), calib)
    assert names == select_layers(_lm(), ("lm_head",))
    assert "lm_head" not in names and isinstance(m.lm_head, nn.Linear)
    assert all(isinstance(m.get_submodule(n), QuantLinear) for n in names)
    # 4-bit codes + an fp16 scale and a 4-bit zero per 16 weights
    assert model_bits_per_weight(m) == pytest.approx(4 + 20 / 16)


@pytest.mark.parametrize("base", ["rtn", "gptq", "awq", "squeezellm"])
def test_outliers_and_significant_weights_are_exact_and_within_budget(base, calib):
    ref = _lm()
    m = copy.deepcopy(ref)
    cfg = RequantConfig(base=base, bits=3, group_size=16, outlier_ratio=0.01,
                        significant_ratio=0.004, steps=2, pqi_points=2)  # fmt: skip
    names = quantize_(m, cfg, calib)
    total = sum(ref.get_submodule(n).weight.numel() for n in names)
    nnz = sum(m.get_submodule(n).nnz for n in names)
    per_step = round(0.004 / 2 * total)
    budget = round(0.01 * total) + 2 * per_step
    assert 2 * per_step <= nnz <= budget + len(names)  # rounding per layer
    for n in names:
        q = m.get_submodule(n)
        w = ref.get_submodule(n).weight.detach()
        if q.nnz:
            rows = torch.repeat_interleave(torch.arange(q.out_features),
                                           (q.sparse_crow[1:] - q.sparse_crow[:-1]).long())  # fmt: skip
            cols = q.sparse_col.long()
            torch.testing.assert_close(q.dequantize()[rows, cols], w[rows, cols].half().float())
    assert torch.isfinite(torch.tensor(mean_loss(m, [calib])))


def test_allocation_meets_the_budget_and_favours_the_layer_with_outliers():
    torch.manual_seed(0)
    w = {"a": torch.randn(32, 64), "b": torch.randn(32, 64)}
    w["b"].view(-1)[torch.randperm(2048)[:40]] *= 30.0  # heavy outliers in b
    h = {k: torch.ones(64) for k in w}
    r = allocate_outliers(w, h, 0.01, 3, {"a": 16, "b": 16})
    assert sum(r[k] * w[k].numel() for k in w) <= 0.01 * 4096 + 1e-9
    assert r["b"] > r["a"]


def test_save_load_gives_bit_identical_outputs(tmp_path, calib):
    m = _lm()
    quantize_(m, RequantConfig(base="awq", bits=3, group_size=16, outlier_ratio=0.01), calib)
    m.eval()
    with torch.no_grad():
        want = m(calib[:, :-1])[0]
    path = tmp_path / "q.safetensors"
    size = save_quantized(m, path)
    assert size == path.stat().st_size
    fresh = _lm(seed=5)
    names = load_quantized(fresh, path)
    fresh.eval()
    with torch.no_grad():
        got = fresh(calib[:, :-1])[0]
    assert torch.equal(got, want)
    assert set(names) == {n for n, x in m.named_modules() if isinstance(x, QuantLinear)}


def test_squeezellm_codebooks_save_and_load_bit_identically(tmp_path, calib):
    m = _lm()
    cfg = RequantConfig(base="squeezellm", bits=3, outlier_ratio="auto", adaptive=False)
    names = quantize_(m, cfg, calib)  # group_size does not apply: one codebook per row
    q = m.get_submodule(names[0])
    assert q.codebook is not None and q.scale is None and q.codebook.shape == (q.out_features, 8)
    m.eval()
    with torch.no_grad():
        want = m(calib[:, :-1])[0]
    save_quantized(m, tmp_path / "s.safetensors")
    fresh = _lm(seed=9)
    load_quantized(fresh, tmp_path / "s.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh.eval()(calib[:, :-1])[0], want)


def test_loading_refuses_a_wrong_model_or_a_damaged_file(tmp_path, calib):
    m = _lm()
    quantize_(m, RequantConfig(base="rtn", bits=4, group_size=16), calib)
    path = tmp_path / "q.safetensors"
    save_quantized(m, path)
    other = LM(LMConfig(vocab_size=32, block_size=16, n_layer=1, n_heads=2, head_dim=8))
    with pytest.raises(CheckpointError, match="in the model but"):
        load_quantized(other, path)
    deeper = LM(LMConfig(vocab_size=32, block_size=16, n_layer=2, n_heads=2, head_dim=16))
    with pytest.raises(CheckpointError, match="does not match the model: missing"):
        load_quantized(deeper, path)
    assert not any(isinstance(x, QuantLinear) for x in deeper.modules())  # untouched
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_quantized(_lm(), bad)
    # a well-formed file whose values cannot be right
    tensors, meta = load_tensors(path)
    tensors["blocks.0.attn.q.scale"] = -tensors["blocks.0.attn.q.scale"]
    save_tensors(tmp_path / "neg.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="scales must be finite and positive"):
        load_quantized(_lm(), tmp_path / "neg.safetensors")
    save_tensors(tmp_path / "plain.safetensors", {"x": torch.zeros(1)}, {"kind": "other"})
    with pytest.raises(CheckpointError, match="not a quantized tenfold model"):
        load_quantized(_lm(), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="no QuantLinear layers"):
        save_quantized(_lm(), tmp_path / "none.safetensors")
    json.dumps(meta)  # the metadata stays plain JSON


def test_quantlinear_matches_its_parts_and_checks_inputs():
    torch.manual_seed(0)
    w = torch.randn(8, 32)
    scale, zero = G.uniform_params(w, 3, 16)
    codes = G.uniform_codes(w, scale, zero, 3, 16)
    mask = torch.zeros(8, 32, dtype=torch.bool)
    mask[2, 5] = mask[7, 0] = True
    w[2, 5] = 0.0  # a sparse value of exactly zero is kept, not dropped
    q = QuantLinear.from_parts(codes, 3, 16, scale=scale, zero=zero, sparse_mask=mask, weight=w)
    want = G.uniform_dequant(codes, scale, zero, 16)
    want[2, 5], want[7, 0] = 0.0, w[7, 0].half().float()
    assert q.nnz == 2 and torch.equal(q.dequantize(), want)
    x = torch.randn(4, 32)
    torch.testing.assert_close(q(x), x @ want.T)
    with pytest.raises(ValueError, match="expects inputs with 32 features"):
        q(torch.randn(4, 31))
    bits = q.stored_bits()
    assert bits == {"codes": 256 * 3, "grid": 16 * 16 + 16 * 3, "in_scale": 0,
                    "sparse": 2 * 48 + 9 * 32}  # fmt: skip


def test_docs_usage_block_runs(capsys):
    """The usage block of docs/requant.md runs as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "requant.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0]
    exec(compile(code, "docs/requant.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("12 QuantLinear(in=64, out=64, bits=3, group=32, uniform, sparse=")


def test_parallel_calibration_takes_one_pass_and_sequential_one_per_layer(calib):
    calls = []

    def counting_loss(model, batch):
        from tenfold.requant import lm_loss

        calls.append(1)
        return lm_loss(model, batch)

    n_batches = 2  # 16 windows in batches of 8
    for sequential, passes in ((False, 1), (True, 6)):
        calls.clear()
        m = _lm()
        quantize_(m, RequantConfig(base="gptq", group_size=16, sequential=sequential), calib,
                  loss_fn=counting_loss)  # fmt: skip
        assert len(calls) == passes * n_batches
        assert torch.isfinite(torch.tensor(mean_loss(m, [calib])))
