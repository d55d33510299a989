"""tenfold: ten 2025 papers on efficient, scalable generative AI as usable PyTorch APIs.

``import tenfold`` is light: it never imports Triton or compiles anything. The shared core
lives in :mod:`tenfold.core`; each method has its own subpackage.
"""

__version__ = "0.1.0"
