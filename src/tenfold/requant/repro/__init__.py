"""Reproductions of arXiv 2503.01901 (PQI + ReQuant) at CPU scale.

* ``requant/sensitivity`` (:mod:`.sensitivity`) -- actual loss change of weight quantization
  against Taylor-1, Taylor-2, Fisher and PQI on the Python-docs LM.
* ``requant/ptq`` (:mod:`.ptq`) -- held-out perplexity for each base quantizer and bit width,
  with and without ReQuant, and the paper's ablation.
* ``requant/minilm`` (:mod:`.minilm`) -- all-MiniLM-L6-v2 quantized: embedding fidelity and
  retrieval on the Python docs.
"""

from . import minilm, ptq, sensitivity

__all__ = ["minilm", "ptq", "sensitivity"]
