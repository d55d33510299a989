"""Each model is faithful to the reference code it is named for, one test per fix of the
house-v2 review: U-ViT against an independent re-implementation of baofff/U-ViT's forward
(weights ported across), EDM with DiT's learned-sigma channels, MMDiT's padding mask against
SD3's attend-to-everything, the Llama-7B preset, the LM's init and q/k-norm eps, EDM's
pixel reduction, and DiT's label dropout and null label."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.data import CaptionTokenizer
from tenfold.core.diffusion import EDMConfig, EDMPrecond, denoising_loss, edm_loss
from tenfold.core.models import (
    LM,
    LM_MODELS,
    DiT,
    DiTConfig,
    LMConfig,
    MMDiT,
    MMDiTConfig,
    UViT,
    UViTConfig,
)


# ----------------------------------------------------------------------------- U-ViT
def _uvit_reference(sd: dict, cfg: UViTConfig, x, t, y):
    """baofff/U-ViT's ``UViT.forward`` (libs/uvit.py) written out functionally: time token
    = the raw sinusoid at model width (mlp_time_embed=False), tokens [label, time, patches],
    blocks with one bias-free qkv projection and timm's exact-GELU MLP, long skips, the
    linear patch decoder with channels last in each patch, and the 3x3 output conv."""
    D, H, p = cfg.dim, cfg.n_heads, cfg.patch_size

    def lin(h, name, bias=True):
        return F.linear(h, sd[f"{name}.weight"], sd[f"{name}.bias"] if bias else None)

    def ln(h, name):
        return F.layer_norm(h, (D,), sd[f"{name}.weight"], sd[f"{name}.bias"])

    def block(h, pre, skip=None):
        if skip is not None:
            h = lin(torch.cat([h, skip], -1), f"{pre}.skip_linear")
        B, L, C = h.shape
        # U-ViT's qkv is one Linear(dim, 3*dim, bias=qkv_bias): ours is q and kv stacked
        w = torch.cat([sd[f"{pre}.attn.q.weight"], sd[f"{pre}.attn.kv.weight"]])
        qkv = F.linear(ln(h, f"{pre}.norm1"), w)  # (B, L, 3C)
        q, k, v = qkv.reshape(B, L, 3, H, C // H).permute(
            2, 0, 3, 1, 4
        )  # 'B L (K H D) -> K B H L D'
        att = ((q @ k.transpose(-2, -1)) * (C // H) ** -0.5).softmax(-1)
        h = h + lin((att @ v).transpose(1, 2).reshape(B, L, C), f"{pre}.attn.proj")
        m = F.gelu(lin(ln(h, f"{pre}.norm2"), f"{pre}.mlp.fc1"))  # nn.GELU(): exact
        return h + lin(m, f"{pre}.mlp.fc2")

    h = F.conv2d(x, sd["x_embedder.weight"], sd["x_embedder.bias"], stride=p)
    h = h.flatten(2).transpose(1, 2)  # (B, L, D)
    half = D // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    time_token = torch.cat([torch.cos(args), torch.sin(args)], -1)[:, None]
    h = torch.cat([time_token, h], 1)
    h = torch.cat([sd["y_embedder.table.weight"][y][:, None], h], 1)  # label in front
    h = h + sd["pos_embed"]
    skips = []
    for i in range(cfg.depth // 2):
        h = block(h, f"in_blocks.{i}")
        skips.append(h)
    h = block(h, "mid_block")
    for i in range(cfg.depth // 2):
        h = block(h, f"out_blocks.{i}", skips.pop())
    h = lin(ln(h, "norm"), "decoder_pred")[:, 2:]
    g = cfg.input_size // p
    h = h.reshape(h.shape[0], g, g, p, p, cfg.in_channels)  # 'B (h w) (p1 p2 C)'
    img = h.permute(0, 5, 1, 3, 2, 4).reshape(h.shape[0], cfg.in_channels, g * p, g * p)
    return F.conv2d(img, sd["final_layer.weight"], sd["final_layer.bias"], padding=1)


def test_uvit_matches_the_reference_forward_with_ported_weights():
    torch.manual_seed(0)
    cfg = UViTConfig(input_size=8, in_channels=2, patch_size=2, depth=5, n_heads=2, head_dim=16)
    net = UViT(cfg).eval()
    with torch.no_grad():  # zero-init biases would hide a missing bias; make them all count
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t, y = torch.randn(3, 2, 8, 8), torch.randn(3), torch.tensor([0, 4, 9])
    ref = _uvit_reference(net.state_dict(), cfg, x, t, y)
    torch.testing.assert_close(net(x, t, y), ref, rtol=1e-4, atol=1e-5)


def test_uvit_defaults_are_uvits_and_the_variations_are_options():
    net = UViT(UViTConfig(input_size=8, n_heads=2, head_dim=16))
    assert net.t_embedder.mlp is None  # mlp_time_embed=False: the raw sinusoid
    blk = net.in_blocks[0]
    assert blk.attn.q.bias is None and blk.attn.kv.bias is None and blk.attn.proj.bias is not None
    assert blk.mlp.approximate == "none"
    assert 0.8 < net.y_embedder.table.weight.std().item() < 1.2  # PyTorch's N(0, 1) label table
    alt = UViT(
        UViTConfig(
            input_size=8, n_heads=2, head_dim=16, mlp_time_embed=True, qkv_bias=True,
            gelu="tanh", label_init_std=0.02,
        )
    )  # fmt: skip
    assert alt.t_embedder.mlp[0].out_features == 4 * 32  # U-ViT's dim -> 4 dim -> dim
    assert alt.in_blocks[0].attn.q.bias is not None and alt.in_blocks[0].mlp.approximate == "tanh"
    assert alt.y_embedder.table.weight.std().item() < 0.05
    with pytest.raises(ValueError, match="gelu"):
        UViTConfig(gelu="relu")


# ----------------------------------------------------------------------------- EDM + learn_sigma
@pytest.mark.parametrize("channels", [1, 3])
def test_edm_drops_dits_learned_sigma_channels(channels):
    net = DiT(DiTConfig(input_size=8, in_channels=channels, n_heads=2, head_dim=16, depth=1,
                        learn_sigma=True))  # fmt: skip
    assert net.config.out_channels == 2 * channels
    D = EDMPrecond(net)
    x = torch.randn(2, channels, 8, 8)
    out = D(x, torch.tensor([0.5, 2.0]), torch.tensor([1, 2]))
    assert out.shape == x.shape


def test_edm_rejects_a_network_with_the_wrong_channels():
    class Bad(nn.Module):
        def forward(self, x, t, y):
            return torch.cat([x, x, x], 1)

    with pytest.raises(ValueError, match="3 channels for an input of 1"):
        EDMPrecond(Bad())(torch.randn(2, 1, 4, 4), torch.ones(2))


# ----------------------------------------------------------------------------- MMDiT mask
def _perturbed(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_mmdit_masks_padding_by_default_and_attends_to_every_token_like_sd3_on_request():
    torch.manual_seed(0)
    tok = CaptionTokenizer()
    masked = _perturbed(MMDiT(MMDiTConfig(input_size=8, n_heads=2, head_dim=16, depth=2)))
    sd3 = MMDiT(MMDiTConfig(input_size=8, n_heads=2, head_dim=16, depth=2, mask_text_padding=False))
    sd3.load_state_dict(masked.state_dict())
    sd3.eval()
    x, t = torch.randn(2, 1, 8, 8), torch.randn(2)
    short = tok.encode(["a seven", "a two"])  # padded to text_len
    assert (short == 0).any()
    assert not torch.allclose(masked(x, t, short), sd3(x, t, short), atol=1e-5)
    # SD3 mode: padding tokens are attended, so what sits in the padding changes the output
    full = short.clone()
    full[full == 0] = 3  # the same captions with the padding replaced by real tokens
    assert not torch.allclose(sd3(x, t, short), sd3(x, t, full), atol=1e-5)


# ----------------------------------------------------------------------------- the LM
def test_llama_7b_preset_is_llama_7b():
    c = LMConfig(**LM_MODELS["llama-7b"])
    assert (c.vocab_size, c.tie_embeddings, c.init, c.norm_eps) == (32000, False, "llama", 1e-6)
    with torch.device("meta"):
        n = sum(p.numel() for p in LM(c).parameters())
    assert n == 6_738_415_616  # Llama-7B's parameter count (untied 32000-token embeddings)


def test_lm_init_is_gpt2_or_llamas_plain_normal():
    torch.manual_seed(0)
    kw = dict(n_layer=8, n_heads=4, head_dim=32, vocab_size=512)
    gpt2 = LM(LMConfig(**kw))
    llama = LM(LMConfig(**kw, init="llama", tie_embeddings=False))
    s_gpt2 = gpt2.blocks[0].attn.proj.weight.std().item()
    s_llama = llama.blocks[0].attn.proj.weight.std().item()
    assert abs(s_gpt2 - 0.02 / math.sqrt(16)) < 0.001  # scaled residual projection
    assert abs(s_llama - 0.02) < 0.002
    assert abs(llama.blocks[0].mlp.down.weight.std().item() - 0.02) < 0.002
    assert llama.lm_head.weight is not llama.tok_emb.weight
    with pytest.raises(ValueError, match="init"):
        LMConfig(init="xavier")


def test_qk_norm_eps_follows_norm_eps():
    lm = LM(LMConfig(n_layer=1, n_heads=2, head_dim=16, qk_norm=True, norm_eps=1e-3))
    attn = lm.blocks[0].attn
    assert attn.q_norm.eps == attn.k_norm.eps == 1e-3 == lm.norm.eps
    with pytest.raises(ValueError, match="norm_eps"):
        LMConfig(norm_eps=0.0)


# ----------------------------------------------------------------------------- EDM loss
def test_edm_loss_sums_over_pixels_like_nvlabs_edm_on_request():
    torch.manual_seed(0)
    net = EDMPrecond(DiT(DiTConfig(input_size=8, n_heads=2, head_dim=16, depth=1)))
    x0, y = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3])
    sigma, noise = torch.tensor([0.3, 1.0, 3.0]), torch.randn(3, 1, 8, 8)
    mean = edm_loss(net, x0, y, EDMConfig(), sigma=sigma, noise=noise)
    total = edm_loss(net, x0, y, EDMConfig(loss_reduction="sum"), sigma=sigma, noise=noise)
    torch.testing.assert_close(total, mean * 64)  # C*H*W = 64
    with pytest.raises(ValueError, match="loss_reduction"):
        EDMConfig(loss_reduction="max")
    with pytest.raises(ValueError, match="reduction"):
        denoising_loss(net, x0, sigma, noise, y, reduction="none")


# ----------------------------------------------------------------------------- DiT labels
def test_dit_can_drop_labels_itself_like_dits_label_embedder():
    torch.manual_seed(0)
    cfg = DiTConfig(input_size=8, n_heads=2, head_dim=16, depth=1, class_dropout_prob=0.5,
                    class_dropout_in_model=True)  # fmt: skip
    emb = DiT(cfg).y_embedder
    y = torch.full((400,), 3)
    null_row, row3 = emb.table.weight[10], emb.table.weight[3]
    out = emb.train()(y)
    dropped = (out == null_row).all(-1)
    assert 120 < dropped.sum() < 280 and ((out == row3).all(-1) | dropped).all()
    assert (emb.eval()(y) == row3).all()  # no dropout at evaluation
    default = DiT(DiTConfig(input_size=8, n_heads=2, head_dim=16, depth=1)).y_embedder.train()
    assert (default(y) == default.table.weight[3]).all()  # the task drops labels, not the model


def test_the_null_label_is_a_clear_error_without_a_null_row():
    net = DiT(DiTConfig(input_size=8, n_heads=2, head_dim=16, depth=1, class_dropout_prob=0.0))
    x, t = torch.randn(2, 1, 8, 8), torch.randn(2)
    with pytest.raises(ValueError, match="no null label"):
        net(x, t, torch.tensor([1, 10]))
    with pytest.raises(ValueError, match="no null label"):
        _ = net.y_embedder.null_label
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 10\)"):
        net(x, t, torch.tensor([1, 11]))
    with pytest.raises(ValueError, match="class labels"):
        DiT(DiTConfig(input_size=8, n_heads=2, head_dim=16, depth=1))(x, t, torch.tensor([-1, 0]))
