"""What both muP experiments share: the digits backbones at a width of ``n_heads`` heads of
32 and the checks of their width lists."""

from __future__ import annotations

from typing import Literal

from ...core.models import BACKBONES

__all__ = ["Family", "FAMILY_NAMES", "HEAD_DIM", "build_backbone", "check_heads", "check_families"]

Family = Literal["dit", "uvit", "pixart", "mmdit"]
FAMILY_NAMES = {"dit": "DiT", "uvit": "U-ViT", "pixart": "PixArt-alpha", "mmdit": "MMDiT"}
HEAD_DIM = 32  # the digits presets' head dim: width = heads * 32


def _preset(family: str) -> str:
    return next(k for k in BACKBONES[family].presets if "Digits" in k)


def build_backbone(family: str, n_heads: int, depth: int = 0, image_size: int = 8):
    """A digits backbone of the family at ``n_heads`` heads of 32 (depth 0: the preset's)."""
    over = {"n_heads": n_heads, "input_size": image_size}
    if depth:
        over["depth"] = depth + 1 if family == "uvit" and depth % 2 == 0 else depth
    return BACKBONES[family].build(_preset(family), **over)


def check_heads(heads: tuple[int, ...], what: str) -> None:
    if len(heads) < 2 or any(h < 1 for h in heads) or list(heads) != sorted(set(heads)):
        raise ValueError(f"{what} must be >= 2 increasing head counts >= 1, got {heads}")


def check_families(families: tuple[str, ...]) -> None:
    if not families:
        raise ValueError("backbones must name at least one of dit, uvit, pixart, mmdit")
    for f in families:
        if f not in BACKBONES:
            raise ValueError(f"unknown backbone {f!r}; choose from {', '.join(BACKBONES)}")
