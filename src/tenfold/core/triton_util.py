"""What every method's Triton fast path shares: importing Triton lazily (``import tenfold``
never imports it), the interpreter switch and the device check with its clear error."""

from __future__ import annotations

import os

import torch
from torch import Tensor

_MODULES: tuple | None | bool = False  # False: not looked up yet


def triton_modules():
    """(triton, triton.language), or None when Triton is not installed. Memoised by hand, not
    with functools.cache, so that torch.compile traces the kernel wrappers without warnings."""
    global _MODULES
    if _MODULES is False:
        try:
            import triton
            import triton.language as tl

            _MODULES = (triton, tl)
        except ImportError:
            _MODULES = None
    return _MODULES


def interpret() -> bool:
    """True when kernels run in the Triton interpreter (``TRITON_INTERPRET=1``, on the CPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> bool:
    """True when Triton kernels can run: Triton imports and a GPU (or the interpreter) is there."""
    return triton_modules() is not None and (torch.cuda.is_available() or interpret())


def require(x: Tensor, package: str) -> None:
    """Raise a clear error when ``package``'s kernels cannot run on ``x``."""
    if triton_modules() is None:
        raise RuntimeError(
            f"{package} kernels need Triton (pip install triton); use "
            "backend='reference' to run the PyTorch reference instead"
        )
    if not x.is_cuda and not interpret():
        raise RuntimeError(
            f"{package} kernels run on CUDA tensors (got {x.device}); set "
            "TRITON_INTERPRET=1 before anything imports triton to run them on the CPU, or use "
            "backend='reference'"
        )
