"""Low-bit attention (arXiv 2505.11594: SageAttention3 + SageBwd). Work in progress: the
reference number formats (FP8 E4M3, FP4 E2M1, NVFP4, MXFP4, INT8 per token block) are in
:mod:`tenfold.attention._ref`; the attention variants, kernels and experiments follow."""
