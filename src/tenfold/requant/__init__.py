"""PQI + ReQuant (arXiv 2503.01901): an accurate quantization-sensitivity metric (the
Post-quantization Integral) and dense-and-sparse post-training weight quantization on top of
RTN, GPTQ, AWQ and SqueezeLLM. See ``docs/requant.md``.

    from tenfold.requant import RequantConfig, quantize_, save_quantized
    quantize_(model, RequantConfig(base="gptq", bits=3, outlier_ratio=0.0025,
                                   significant_ratio=0.0005), calib_tokens)
    save_quantized(model, "model-3bit.safetensors")
"""

from ..core.experiment import MethodInfo
from .api import BaseQuantizer, RequantConfig, quantize_, select_embeddings, select_layers
from .qlinear import (
    QuantEmbedding,
    QuantLinear,
    QuantModule,
    load_quantized,
    model_bits_per_weight,
    save_quantized,
)
from .quantizers import (
    InputStats,
    QuantWeight,
    awq_quantize,
    gptq_quantize,
    rtn_quantize,
    squeezellm_quantize,
)
from .requant import allocate_outliers, fisher_diagonal
from .sensitivity import (
    Quadrature,
    Sensitivity,
    exact_delta,
    fisher,
    lm_loss,
    mean_loss,
    pqi,
    taylor1,
    taylor2,
)

METHOD = MethodInfo(
    "requant",
    "2503.01901",
    "PQI + ReQuant",
    "accurate quantization-sensitivity metric, better post-training weight quantization",
)

__all__ = [
    "METHOD",
    "BaseQuantizer",
    "InputStats",
    "Quadrature",
    "QuantEmbedding",
    "QuantLinear",
    "QuantModule",
    "QuantWeight",
    "RequantConfig",
    "Sensitivity",
    "allocate_outliers",
    "awq_quantize",
    "exact_delta",
    "fisher",
    "fisher_diagonal",
    "gptq_quantize",
    "lm_loss",
    "load_quantized",
    "mean_loss",
    "model_bits_per_weight",
    "pqi",
    "quantize_",
    "rtn_quantize",
    "save_quantized",
    "select_embeddings",
    "select_layers",
    "squeezellm_quantize",
    "taylor1",
    "taylor2",
]
