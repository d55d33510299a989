"""The point-cloud-conditioned mesh generator: a small point encoder whose output tokens
are the prefix of core's decoder-only LM over DeepMesh tokens.

    gen = MeshGenerator(MeshGenConfig(n_layer=4, n_heads=4, head_dim=32))
    loss = gen.loss(cond, tokens, mask)                  # cond (B, N, 6): xyz + normal
    out = gen.sample(cond, max_new_tokens=800, temperature=0.8, top_p=0.95)
    out[0].vertices, out[0].faces, out[0].report         # every constrained sample decodes

DeepMesh conditions by cross-attention on 257 point tokens inside a 0.5B hourglass model;
here the K point tokens sit before the mesh tokens in one causal sequence (a prefix), which
keeps the LM core's and needs no second attention path. Sequences longer than the window
are trained on random windows (sliding-window training) and generated with a sliding
window: when the context fills, the cache is rebuilt from the prefix and the last half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.models.lm import LM, LMConfig
from ..core.validate import check_config, check_number, check_tensor, config_fail
from .tokenizer import DecodeReport, MeshGrammar, MeshTokenizer

__all__ = [
    "MeshGenConfig",
    "MeshGenerator",
    "PointEncoder",
    "Sample",
    "as_cond",
    "load_generator",
    "save_generator",
    "top_p_filter",
    "windows",
]


@dataclass(frozen=True)
class MeshGenConfig:
    """Sizes of :class:`MeshGenerator`. ``block_size`` = ``n_cond`` prefix tokens + the
    longest token window the LM sees."""

    levels: int = 512
    split: tuple[int, ...] = (4, 8, 16)
    n_cond: int = 32  # point-cloud prefix tokens
    n_freq: int = 6  # Fourier frequencies of the point encoder
    n_layer: int = 4
    n_heads: int = 4
    head_dim: int = 32
    block_size: int = 544

    def __post_init__(self):
        check_config(
            self,
            levels=">=2",
            split=">=2",
            n_cond=">=1",
            n_freq=">=0",
            n_layer=">=1",
            n_heads=">=1",
            head_dim=">=2",
            block_size=">=2",
        )
        if math.prod(self.split) != self.levels:
            config_fail(self, f"split {self.split} must multiply to levels={self.levels}")
        if self.block_size < self.n_cond + 16:
            config_fail(self, f"block_size={self.block_size} leaves < 16 tokens after n_cond")

    @property
    def window(self) -> int:
        """Mesh tokens per forward pass (the sliding window)."""
        return self.block_size - self.n_cond


class PointEncoder(nn.Module):
    """(B, N, 6) points with normals -> (B, K, dim) tokens: a per-point MLP over the point,
    its normal and Fourier features of its position, then K learned queries attending to
    the points (Perceiver-style pooling; order of the points does not matter)."""

    def __init__(self, dim: int, n_tokens: int, n_freq: int = 6, n_heads: int = 4):
        super().__init__()
        self.register_buffer("freq", (2.0 ** torch.arange(n_freq)) * math.pi, persistent=False)
        d_in = 6 + 6 * n_freq
        self.mlp = nn.Sequential(
            nn.Linear(d_in, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        self.queries = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        heads = n_heads if dim % n_heads == 0 else 1
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_kv = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )
        self.out = nn.LayerNorm(dim)

    def forward(self, cond: Tensor) -> Tensor:
        xyz = cond[..., :3]  # (B, N, 3)
        ang = xyz[..., None] * self.freq  # (B, N, 3, F)
        feat = torch.cat([cond, ang.sin().flatten(-2), ang.cos().flatten(-2)], -1)  # (B, N, 6+6F)
        h = self.norm_kv(self.mlp(feat))  # (B, N, C)
        q = self.queries.expand(cond.shape[0], -1, -1)  # (B, K, C)
        y, _ = self.attn(q, h, h, need_weights=False)  # (B, K, C)
        y = y + self.ff(y)  # (B, K, C)
        return self.out(y)


@dataclass
class Sample:
    """One generated mesh: the decoded mesh (as :class:`DecodeResult`) and its tokens."""

    vertices: np.ndarray  # (V, 3) in [-1, 1]
    faces: np.ndarray  # (F, 3)
    qvertices: np.ndarray
    report: DecodeReport
    tokens: np.ndarray  # the sampled sequence, BOS .. EOS (or where the budget ended)


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches
    ``top_p`` (always the most likely one); the rest get -inf. logits (B, V)."""
    if top_p >= 1.0:
        return logits
    sl, si = torch.sort(logits, descending=True, dim=-1)
    cp = sl.softmax(-1).cumsum(-1)
    drop = cp - sl.softmax(-1) >= top_p  # mass before this token already reaches top_p
    drop[:, 0] = False
    sl = sl.masked_fill(drop, -float("inf"))
    return torch.full_like(logits, -float("inf")).scatter(-1, si, sl)


class MeshGenerator(nn.Module):
    """Point encoder + core LM over :class:`MeshTokenizer` tokens."""

    def __init__(self, config: MeshGenConfig):
        super().__init__()
        self.config = c = config
        self.tokenizer = MeshTokenizer(c.levels, c.split)
        self.lm = LM(
            LMConfig(
                vocab_size=self.tokenizer.vocab_size,
                block_size=c.block_size,
                n_layer=c.n_layer,
                n_heads=c.n_heads,
                head_dim=c.head_dim,
            )
        )
        self.encoder = PointEncoder(self.lm.config.dim, c.n_cond, c.n_freq, c.n_heads)

    # -- training -----------------------------------------------------------------------

    def _check(self, cond: Tensor, tokens: Tensor | None = None) -> None:
        check_tensor("cond", cond, ndim=3, floating=True)
        if cond.shape[-1] != 6:
            raise ValueError(f"cond must be (B, N, 6) points + normals, got {tuple(cond.shape)}")
        if tokens is not None:
            check_tensor("tokens", tokens, ndim=2, dtypes=(torch.int64, torch.int32))
            if tokens.shape[0] != cond.shape[0]:
                raise ValueError(f"cond has {cond.shape[0]} clouds, tokens {tokens.shape[0]} rows")
            if tokens.shape[1] > self.config.window + 1:
                raise ValueError(
                    f"token windows must hold at most window+1={self.config.window + 1} tokens, "
                    f"got {tokens.shape[1]}: cut sequences with windows()"
                )
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.tokenizer.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, {self.tokenizer.vocab_size}), got {lo}..{hi}"
                )

    def forward(self, cond: Tensor, tokens: Tensor) -> Tensor:
        """Logits (B, T, V) of the next token after each of ``tokens`` (B, T)."""
        self._check(cond, tokens)
        prefix = self.encoder(cond)  # (B, K, C)
        return self.lm(tokens, prefix=prefix)[0]

    def token_log_probs(self, cond: Tensor, tokens: Tensor) -> Tensor:
        """(B, T-1): log p(tokens[:, t+1] | cond, tokens[:, :t+1])."""
        logits = self(cond, tokens[:, :-1])  # (B, T-1, V)
        return logits.float().log_softmax(-1).gather(-1, tokens[:, 1:, None].long())[..., 0]

    def loss(self, cond: Tensor, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean next-token cross-entropy over the positions where ``mask[:, 1:]`` is true
        (padding False). tokens (B, T), mask (B, T) bool."""
        lp = self.token_log_probs(cond, tokens)  # (B, T-1)
        if mask is None:
            return -lp.mean()
        m = mask[:, 1:].to(lp.dtype)
        return -(lp * m).sum() / m.sum().clamp_min(1)

    def log_prob(self, cond: Tensor, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """log p(sequence | cond) summed over the scored positions -> (B,) (DPO's log pi)."""
        lp = self.token_log_probs(cond, tokens)  # (B, T-1)
        if mask is not None:
            lp = lp * mask[:, 1:].to(lp.dtype)
        return lp.sum(1)

    # -- generation ---------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        cond: Tensor,
        max_new_tokens: int = 1024,
        temperature: float = 1.0,
        top_p: float = 1.0,
        constrained: bool = True,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> list[Sample]:
        """Sample one mesh per cloud of ``cond`` (B, N, 6). ``constrained`` masks every
        token the grammar forbids (each sample then decodes to a mesh, with at least one
        face) and closes the mesh with EOS when the token budget runs out; otherwise the
        raw samples are decoded leniently (their reports say what was dropped). Returns
        one :class:`Sample` (vertices, faces, qvertices, report) per cloud; ``.tokens``
        holds the sampled sequence."""
        self._check(cond)
        if not torch.isfinite(cond).all():
            raise ValueError("cond holds NaN/inf: sampling needs a finite point cloud")
        max_new_tokens = int(check_number("max_new_tokens", max_new_tokens, ">=1", integer=True))
        temperature = check_number("temperature", temperature, ">=0")
        top_p = check_number("top_p", top_p, "(0,1]")
        was = self.training
        self.eval()
        B = cond.shape[0]
        tok = self.tokenizer
        dev = cond.device
        grammars = [MeshGrammar(tok, min_faces=1) for _ in range(B)]
        closing = 3 * len(tok.split) + 1  # tokens that always suffice to end a mesh
        if constrained and max_new_tokens < closing:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} cannot hold one face and EOS; constrained "
                f"sampling needs at least {closing}"
            )
        seqs = [[tok.bos] for _ in range(B)]
        for g in grammars:
            g.feed(tok.bos)
        done = [False] * B
        prefix = self.encoder(cond)  # (B, K, C)
        W = self.config.window
        cache, fed, start = None, 0, 0  # cache holds seqs[start:fed] after the prefix
        from tqdm.auto import tqdm

        bar = tqdm(total=max_new_tokens, desc="sample", disable=not progress, leave=False)
        for step in range(max_new_tokens):
            n = len(seqs[0])
            if use_cache:
                if cache is None or n - start > W:  # first step, or the window is full
                    if n - start > W:
                        start = n - W // 2
                    cache = self.lm.new_cache()
                    idx = self._col(seqs, start, dev)  # (B, n - start)
                    logits = self.lm(idx, cache=cache, prefix=prefix)[0][:, -1]  # (B, V)
                else:
                    logits = self.lm(self._col(seqs, fed, dev), cache=cache)[0][:, -1]
                fed = n
            else:  # reference: recompute the last window every step
                start = max(0, n - W)
                logits = self.lm(self._col(seqs, start, dev), prefix=prefix)[0][:, -1]
            logits = logits.float()
            if not torch.isfinite(logits).all():
                raise FloatingPointError(
                    f"the model produced NaN/inf logits at step {step}: its weights are broken"
                )
            remaining = max_new_tokens - step
            if constrained:
                masks = np.stack([g.allowed() for g in grammars])  # (B, V)
                for b, g in enumerate(grammars):
                    if done[b]:
                        masks[b] = False
                        masks[b, tok.pad] = True
                    elif remaining <= closing and g.faces:
                        # out of budget: no new patch (a centre and two chain vertices
                        # take up to 3 levels + 1 tokens with EOS), and EOS once it may
                        masks[b, tok.ranges.centre_offset : tok.bos] = False
                        if masks[b, tok.eos]:
                            masks[b] = False
                            masks[b, tok.eos] = True
                logits = logits.masked_fill(~torch.from_numpy(masks).to(dev), -float("inf"))
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                lg = top_p_filter(logits / temperature, top_p)
                nxt = torch.multinomial(lg.softmax(-1), 1, generator=generator)[:, 0]
            for b, t in enumerate(nxt.tolist()):
                if done[b]:
                    t = tok.pad
                elif constrained:
                    grammars[b].feed(t)
                seqs[b].append(t)
                if t == tok.eos:
                    done[b] = True
            bar.update(1)
            if all(done):
                break
        bar.close()
        if was:
            self.train()
        out = []
        for s in seqs:
            arr = np.asarray(s, dtype=np.int64)
            if tok.eos in s:
                arr = arr[: s.index(tok.eos) + 1]
            r = tok.decode_full(arr)
            out.append(Sample(r.vertices, r.faces, r.qvertices, r.report, arr))
        return out

    @staticmethod
    def _col(seqs: list, fed: int, dev) -> Tensor:
        return torch.tensor([s[fed:] for s in seqs], device=dev)


def windows(
    tokens: np.ndarray, window: int, rng: np.random.Generator, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """One training window of ``window + 1`` tokens from a sequence (all of it, padded,
    when it fits; else a random crop): (tokens (window+1,), mask (window+1,) bool)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ValueError(
            f"tokens must be a 1-D integer sequence, got {tokens.dtype} {tokens.shape}"
        )
    window = int(check_number("window", window, ">=1", integer=True))
    n = len(tokens)
    out = np.full(window + 1, pad, dtype=np.int64)
    mask = np.zeros(window + 1, dtype=bool)
    if n <= window + 1:
        out[:n], mask[:n] = tokens, True
    else:
        a = int(rng.integers(0, n - window))
        out[:], mask[:] = tokens[a : a + window + 1], True
    return out, mask


def as_cond(points: Any, normals: Any) -> Tensor:
    """(N, 3) points and normals -> a (1, N, 6) float32 condition tensor."""
    p = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    n = torch.as_tensor(np.asarray(normals), dtype=torch.float32)
    return torch.cat([p, n], -1)[None]


def save_generator(path: Any, model: MeshGenerator) -> None:
    """Write the generator's weights and config to a checked safetensors file, atomically."""
    from dataclasses import asdict

    from ..core.io import save_tensors

    save_tensors(path, model.state_dict(), {"kind": "tenfold.mesh.MeshGenerator",
                                            "config": asdict(model.config)})  # fmt: skip


def load_generator(path: Any) -> MeshGenerator:
    """Read a file of :func:`save_generator`: checksum, kind, config and every tensor's name
    and shape are checked (CheckpointError / ValueError name what is wrong)."""
    from ..core.io import CheckpointError, load_tensors

    tensors, meta = load_tensors(path)
    if meta.get("kind") != "tenfold.mesh.MeshGenerator" or not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{path}: not a mesh generator checkpoint (kind {meta.get('kind')!r})"
        )
    cfg = dict(meta["config"])
    cfg["split"] = tuple(cfg.get("split", ()))
    try:
        model = MeshGenerator(MeshGenConfig(**cfg))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad generator config in the checkpoint: {e}") from None
    want = model.state_dict()
    if set(want) != set(tensors) or any(want[k].shape != tensors[k].shape for k in want):
        raise CheckpointError(f"{path}: tensors do not match the generator its config describes")
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise CheckpointError(f"{path}: the checkpoint holds NaN/inf weights")
    model.load_state_dict(tensors)
    return model.eval()
