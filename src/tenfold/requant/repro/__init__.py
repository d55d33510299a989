"""Reproductions of arXiv 2503.01901 (PQI + ReQuant) at CPU scale.

* ``requant/sensitivity`` (:mod:`.sensitivity`) -- actual loss change of weight quantization
  against Taylor-1, Taylor-2, Fisher and PQI on the Python-docs LM.
"""

from . import sensitivity

__all__ = ["sensitivity"]
