import math

import pytest
import torch
import torch.nn.functional as F

from tenfold.core.models import (
    DIT_MODELS,
    LM,
    LM_MODELS,
    Attention,
    DiT,
    DiTConfig,
    LMConfig,
    RotaryEmbedding,
    apply_rope,
    set_attention_fn,
)


def tiny_dit(**kw):
    return DiT(
        DiTConfig(**{**DIT_MODELS["DiT-Digits/2"], "n_heads": 2, "head_dim": 16, "depth": 2, **kw})
    )


def test_dit_shapes_and_zero_init():
    net = tiny_dit(input_size=8)
    x, t, y = torch.randn(3, 1, 8, 8), torch.randn(3), torch.tensor([0, 5, 10])  # 10 = null label
    out = net(x, t, y)
    assert out.shape == (3, 1, 8, 8)
    # adaLN-Zero + zero final layer: the untrained network outputs exactly zero
    assert torch.count_nonzero(out) == 0


def test_dit_learn_sigma_and_patch1():
    net = tiny_dit(input_size=4, patch_size=1, learn_sigma=True, in_channels=3)
    assert net(torch.randn(2, 3, 4, 4), torch.zeros(2), torch.zeros(2, dtype=torch.long)).shape == (
        2,
        6,
        4,
        4,
    )


def test_dit_unpatchify_inverts_patchify():
    net = tiny_dit(input_size=8, in_channels=2)
    x = torch.randn(2, 2, 8, 8)
    p = net.config.patch_size
    tokens = x.unfold(2, p, p).unfold(3, p, p)  # (B, C, h, w, p, p)
    tokens = tokens.permute(0, 2, 3, 4, 5, 1).reshape(2, 16, p * p * 2)  # (B, T, p*p*C)
    assert torch.equal(net.unpatchify(tokens), x)


def test_dit_gradients_reach_every_parameter():
    net = tiny_dit(input_size=8)
    # leave adaLN-Zero: perturb the zero-initialised layers so every path carries gradient
    for p in net.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    out = net(torch.randn(4, 1, 8, 8), torch.randn(4), torch.randint(0, 11, (4,)))
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_dit_rejects_bad_shapes():
    net = tiny_dit(input_size=8)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        net(torch.randn(2, 1, 16, 16), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="expects t of shape"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(3), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(input_size=9), "not divisible by patch_size"),
        (dict(mlp="relu"), "mlp must be"),
        (dict(depth=0), "depth must be >= 1"),
        (dict(class_dropout_prob=1.0), "class_dropout_prob"),
    ],
)
def test_dit_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        DiTConfig(**kw)


def test_width_grows_by_heads_at_fixed_head_dim():
    base = DiTConfig(n_heads=4, head_dim=72)
    wide = base.widen(8)
    assert (base.dim, wide.dim) == (288, 576)
    assert DiT(wide).blocks[0].attn.head_dim == 72


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = LM(LMConfig(**LM_MODELS["lm-tiny"]))
    torch.manual_seed(3)
    b = LM(LMConfig(**LM_MODELS["lm-tiny"]))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lm_shapes_loss_and_causality():
    cfg = LMConfig(vocab_size=50, block_size=16, n_layer=2, n_heads=2, head_dim=16)
    lm = LM(cfg)
    idx = torch.randint(0, 50, (2, 12))
    logits, loss = lm(idx, torch.randint(0, 50, (2, 12)))
    assert logits.shape == (2, 12, 50)
    assert (
        abs(loss.item() - math.log(50)) < 0.5
    )  # near-uniform predictions of unrelated targets at init
    # causal: changing the last token does not change earlier logits
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % 50
    torch.testing.assert_close(lm(idx2)[0][:, :-1], logits[:, :-1])
    assert lm.lm_head.weight is lm.tok_emb.weight  # tied embeddings
    with pytest.raises(ValueError, match="block_size"):
        lm(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        lm(torch.zeros(1, 4))


def test_lm_generate_is_seeded():
    lm = LM(LMConfig(vocab_size=20, block_size=8, n_layer=1, n_heads=2, head_dim=8))
    start = torch.zeros(2, 1, dtype=torch.long)
    a = lm.generate(start, 10, generator=torch.Generator().manual_seed(1), top_k=5)
    b = lm.generate(start, 10, generator=torch.Generator().manual_seed(1), top_k=5)
    assert a.shape == (2, 11) and torch.equal(a, b)


def _manual_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        T, S = q.shape[-2], k.shape[-2]
        s = s.masked_fill(
            torch.ones(T, S, dtype=torch.bool).tril(S - T).logical_not(), float("-inf")
        )
    return s.softmax(-1) @ v


def test_pluggable_attention_kernel_is_used_and_matches_sdpa():
    cfg = LMConfig(vocab_size=30, block_size=8, n_layer=2, n_heads=4, n_kv_heads=2, head_dim=8)
    lm = LM(cfg).eval()
    idx = torch.randint(0, 30, (2, 8))
    ref = lm(idx)[0]
    calls = []

    def kernel(q, k, v, **kw):
        calls.append(q.shape)
        return _manual_attention(q, k, v, **kw)

    assert len(set_attention_fn(lm, kernel)) == 2
    out = lm(idx)[0]
    assert len(calls) == 2 and calls[0] == (2, 4, 8, 8)  # GQA: K/V repeated to 4 heads
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    set_attention_fn(lm, None)
    assert lm.blocks[0].attn.attn_fn is None  # looked up at call time: F.scaled_dot_...
    torch.testing.assert_close(lm(idx)[0], ref)


def test_gqa_kernel_flag_passes_enable_gqa():
    attn = Attention(32, n_heads=4, n_kv_heads=1)
    seen = {}

    def kernel(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
        seen.update(kv_heads=k.shape[1], enable_gqa=enable_gqa)
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=enable_gqa)

    kernel.supports_gqa = True
    attn.attn_fn = kernel
    attn(torch.randn(2, 5, 32), is_causal=True)
    assert seen == {"kv_heads": 1, "enable_gqa": True}


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        cos, sin = rope(torch.arange(max(i, j) + 1))
        qi = apply_rope(q.expand(1, 1, max(i, j) + 1, 8), cos, sin)[..., i, :]
        kj = apply_rope(k.expand(1, 1, max(i, j) + 1, 8), cos, sin)[..., j, :]
        return (qi * kj).sum().item()

    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-4, abs=1e-5)
    # and RoPE preserves norms
    cos, sin = rope(torch.arange(4))
    x = torch.randn(2, 3, 4, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_qk_norm_and_swiglu_variants_run():
    net = tiny_dit(input_size=8, qk_norm=True, mlp="swiglu")
    assert hasattr(net.blocks[0].mlp, "gate")
    assert net(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long)).shape == (
        2,
        1,
        8,
        8,
    )


def test_lm_config_validation():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LMConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="even"):
        LMConfig(head_dim=7)
    assert LMConfig(n_heads=4, head_dim=32).hidden == 384  # 8/3 * 128 rounded up to 64


def test_mlp_denoiser_shapes_conditioning_and_errors():
    from tenfold.core.diffusion import EDMPrecond
    from tenfold.core.models import MLPDenoiser, MLPDenoiserConfig
    from tenfold.core.validate import ConfigError

    net = MLPDenoiser(
        MLPDenoiserConfig(data_dim=3, width=16, num_classes=4, class_dropout_prob=0.1)
    )
    D = EDMPrecond(net)
    x, sigma = torch.randn(5, 3), torch.rand(5) + 0.1
    out = D(x, sigma, torch.tensor([0, 1, 2, 3, 4]))  # 4 = the null label
    assert out.shape == (5, 3)
    c_skip = 0.25 / (sigma**2 + 0.25)
    torch.testing.assert_close(out, c_skip[:, None] * x)  # the zero-init head: D = c_skip x
    assert net.null_label == 4
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 3\)"):
        D(torch.randn(5, 2), sigma, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        D(x, sigma)
    with pytest.raises(ValueError, match="class labels must lie in"):
        D(x, sigma, torch.full((5,), 7))
    plain = MLPDenoiser(MLPDenoiserConfig(width=8))
    with pytest.raises(ValueError, match="unconditional .* y must be None"):
        plain(torch.randn(2, 2), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="no null label"):
        _ = plain.null_label
    with pytest.raises(ConfigError, match="width"):
        MLPDenoiserConfig(width=0)


@pytest.mark.parametrize("kv_heads,qk_norm", [(None, False), (1, True)])
def test_lm_kv_cache_matches_the_full_forward(kv_heads, qk_norm):
    from tenfold.core.models import LM, LMConfig

    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=13, block_size=12, n_layer=2, n_heads=2, n_kv_heads=kv_heads,
                     head_dim=8, qk_norm=qk_norm)).double().eval()  # fmt: skip
    idx = torch.randint(13, (3, 10), generator=torch.Generator().manual_seed(1))
    full = lm(idx)[0]
    cache = lm.new_cache()
    parts = [lm(idx[:, :4], cache=cache)[0]]  # a prompt, then chunks and single tokens
    parts.append(lm(idx[:, 4:7], cache=cache)[0])
    parts += [lm(idx[:, j : j + 1], cache=cache)[0] for j in range(7, 10)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="exceeds block_size=12"):
        lm(idx[:, :3], cache=cache)
    with pytest.raises(ValueError, match="one list per block"):
        lm(idx, cache=[[]])


def test_lm_prefix_embeddings_precede_the_tokens_and_enter_the_cache():
    from tenfold.core.models import LM, LMConfig

    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=11, block_size=16, n_layer=2, n_heads=2, head_dim=8)).double()
    lm.eval()
    idx = torch.randint(11, (2, 7), generator=torch.Generator().manual_seed(2))
    pre = torch.randn(2, 3, lm.config.dim, dtype=torch.float64)
    full = lm(idx, prefix=pre)[0]
    assert full.shape == (2, 7, 11)  # logits for the tokens only
    cache = lm.new_cache()
    parts = [lm(idx[:, :2], cache=cache, prefix=pre)[0]]
    parts += [lm(idx[:, j : j + 1], cache=cache)[0] for j in range(2, 7)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)
    assert cache[0][0].shape[2] == 3 + 7  # the prefix holds positions like tokens
    # the prefix changes what follows (it is attended to), and only through attention
    other = lm(idx, prefix=pre + 1.0)[0]
    assert (other - full).abs().max() > 1e-3
    with pytest.raises(ValueError, match="prefix must have shape"):
        lm(idx, prefix=torch.randn(2, 3, lm.config.dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        lm(idx, prefix=torch.randn(2, 10, lm.config.dim, dtype=torch.float64))


def test_lm_generate_with_and_without_cache_agree_and_slide_past_the_block():
    from tenfold.core.models import LM, LMConfig

    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=11, block_size=8, n_layer=1, n_heads=2, head_dim=8)).double()
    start = torch.zeros(2, 2, dtype=torch.long)
    a = lm.generate(start, 5, generator=torch.Generator().manual_seed(3))
    b = lm.generate(start, 5, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)
    long = lm.generate(start, 12, generator=torch.Generator().manual_seed(3))  # past block 8
    assert long.shape == (2, 14) and torch.equal(long[:, :7], a)
