"""U-ViT, PixArt-alpha and MMDiT beside DiT: shapes, conditioning, masking, widening."""

import pytest
import torch
import torch.nn.functional as F

from tenfold.core.data import CaptionTokenizer, digit_captions
from tenfold.core.diffusion import EDMPrecond, heun_sample
from tenfold.core.models import (
    BACKBONES,
    MMDiTConfig,
    PixArtConfig,
    UViTConfig,
    set_attention_fn,
)

TOK = CaptionTokenizer()
SMALL = dict(n_heads=2, head_dim=16)


def build(family, **kw):
    bb = BACKBONES[family]
    preset = next(k for k in bb.presets if "Digits" in k)
    return bb.build(preset, **{**SMALL, **kw})


def cond(family, n, seed=0):
    labels = torch.arange(n) % 10
    if BACKBONES[family].conditioning == "class":
        return labels
    return TOK.encode(digit_captions(labels, torch.Generator().manual_seed(seed)))


def perturb(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("family", list(BACKBONES))
def test_shapes_and_gradients(family):
    net = perturb(build(family, input_size=8))
    x, t, y = torch.randn(3, 1, 8, 8), torch.randn(3), cond(family, 3)
    out = net(x, t, y)
    assert out.shape == (3, 1, 8, 8)
    out.square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("family", ["pixart", "mmdit"])
def test_zero_initialised_output(family):
    net = build(family, input_size=8)
    assert torch.count_nonzero(net(torch.randn(2, 1, 8, 8), torch.zeros(2), cond(family, 2))) == 0


@pytest.mark.parametrize("family", list(BACKBONES))
def test_width_grows_by_heads(family):
    a, b = build(family), build(family, n_heads=4)
    assert (a.config.dim, b.config.dim) == (32, 64)
    assert b.config == a.config.widen(4)
    assert sum(p.numel() for p in b.parameters()) > sum(p.numel() for p in a.parameters())


@pytest.mark.parametrize("family", ["pixart", "mmdit"])
def test_padding_tokens_do_not_change_the_output(family):
    net = perturb(build(family)).eval()
    ids = cond(family, 4)
    x, t = torch.randn(4, 1, 8, 8), torch.randn(4)
    ref = net(x, t, ids)
    # rewrite what sits behind the padding: the text encoder's mask must hide it. We do so by
    # changing the *embedding* of the padding id, which only padded positions use.
    with torch.no_grad():
        net.text_encoder.tok.weight[0].add_(5.0)
    torch.testing.assert_close(net(x, t, ids), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["pixart", "mmdit"])
def test_captions_condition_the_output(family):
    net = perturb(build(family)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.randn(2)
    a = net(x, t, TOK.encode(["a handwritten three", "a handwritten three"]))
    b = net(x, t, TOK.encode(["a handwritten seven", "a handwritten seven"]))
    assert (a - b).abs().max() > 1e-4


def test_uvit_long_skips_and_odd_depth():
    net = build("uvit")
    assert len(net.in_blocks) == len(net.out_blocks) == 2
    assert all(b.skip_linear is not None for b in net.out_blocks)
    assert all(b.skip_linear is None for b in net.in_blocks)
    with pytest.raises(ValueError, match="depth must be odd"):
        UViTConfig(depth=4)


def test_config_errors_name_the_class_and_value():
    with pytest.raises(
        ValueError, match="PixArtConfig: input_size=9 is not divisible by patch_size=2"
    ):
        PixArtConfig(input_size=9)
    with pytest.raises(
        ValueError, match="MMDiTConfig: text_dim=10 is not divisible by text_heads=4"
    ):
        MMDiTConfig(text_dim=10, text_heads=4)
    with pytest.raises(ValueError, match="unknown preset"):
        BACKBONES["dit"].build("DiT-Huge/2")


def test_bad_conditioning_gets_a_clear_error():
    net = build("pixart")
    x, t = torch.randn(2, 1, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match="caption token ids of shape"):
        net(x, t, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must lie in \[0, 64\)"):
        net(x, t, torch.full((2, 4), 99))
    with pytest.raises(ValueError, match="exceed"):
        net(x, t, torch.ones(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="class labels of shape"):
        build("uvit")(x, t, torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("family", list(BACKBONES))
def test_pluggable_kernel_reaches_every_attention(family):
    net = perturb(build(family)).eval()
    x, t, y = torch.randn(2, 1, 8, 8), torch.randn(2), cond(family, 2)
    ref = net(x, t, y)
    calls = []

    def kernel(q, k, v, **kw):
        calls.append(1)
        return F.scaled_dot_product_attention(q, k, v, **kw)

    n = len(set_attention_fn(net, kernel))
    torch.testing.assert_close(net(x, t, y), ref)
    assert n >= net.config.depth and len(calls) == n


def test_caption_guidance_with_the_empty_caption():
    net = perturb(build("mmdit")).eval()
    D = EDMPrecond(net)
    y = cond("mmdit", 3)
    out = heun_sample(
        D, torch.randn(3, 1, 8, 8), y, num_steps=3, cfg_scale=2.0, null_label=TOK.empty()
    )
    plain = heun_sample(D, torch.randn(3, 1, 8, 8), y, num_steps=3)
    assert out.shape == plain.shape == (3, 1, 8, 8)
    assert torch.isfinite(out).all()


def test_caption_tokenizer():
    caps = digit_captions(torch.arange(10), torch.Generator().manual_seed(1))
    assert len({c.split()[-1] for c in caps}) == 10  # each names its digit
    ids = TOK.encode(caps)
    assert ids.shape == (10, 8) and (ids[:, 0] == TOK.BOS).all()
    assert TOK.decode(ids) == caps
    assert TOK.encode(["a handwritten zebra"])[0, 3].item() == TOK.UNK
    assert TOK.empty().tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    own = CaptionTokenizer.from_texts(["a red circle", "a blue square"])
    assert own.decode(own.encode(["a blue circle"])) == ["a blue circle"]
