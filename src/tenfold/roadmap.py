"""The methods the project plans but has not implemented yet (the report's status table
lists them). When a method lands, its package declares its own ``METHOD`` and its entry
here goes."""

from __future__ import annotations

from .core.experiment import MethodInfo

PLANNED: tuple[MethodInfo, ...] = (
    MethodInfo(
        "diffgap",
        "2503.12131",
        "DiffGAP",
        "bidirectional diffusion in a contrastive audio/text/video embedding space",
    ),
    MethodInfo(
        "nvc",
        "2503.02733",
        "UAR-NVC",
        "neural (INR) video compression, clip by clip, with bounded memory",
    ),
    MethodInfo(
        "dgs", "2504.04153", "Video4DGen", "dynamic Gaussian surfels: 4D content from videos"
    ),
)
