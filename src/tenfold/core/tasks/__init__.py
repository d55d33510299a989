"""Reusable experiment recipes: what two or more reproductions run, kept out of any one of them.

* :mod:`.digits` -- diffusion on scikit-learn's digits for any backbone
  (:class:`DigitsDiffusionConfig`, :class:`DigitsTask`, :func:`train_digits`).
* :mod:`.classifier` -- the digits classifier whose features the digits FD is computed in.
* :mod:`.lm` -- the small-LM run (:class:`LMRunSpec`, :func:`setup_run`, :func:`fit_run`,
  the cached full-precision base model of fine-tuning runs).
* :mod:`.plotting` -- :func:`pyplot` (matplotlib on Agg) and :func:`plot_run`.
"""

from .classifier import DigitsClassifier, digits_classifier
from .digits import (
    DigitsDiffusionConfig,
    DigitsTask,
    Family,
    check_digits_config,
    digits_references,
    sample_grid,
    train_digits,
)
from .lm import (
    LMRunSpec,
    RunResult,
    build_lm,
    fit_run,
    lm_streams,
    lm_trainer,
    pretrained_lm,
    setup_run,
    val_batches,
    val_loss,
)
from .plotting import plot_run, pyplot

__all__ = [
    "DigitsClassifier",
    "digits_classifier",
    "DigitsDiffusionConfig",
    "DigitsTask",
    "Family",
    "check_digits_config",
    "digits_references",
    "sample_grid",
    "train_digits",
    "LMRunSpec",
    "RunResult",
    "build_lm",
    "fit_run",
    "lm_streams",
    "lm_trainer",
    "pretrained_lm",
    "setup_run",
    "val_batches",
    "val_loss",
    "plot_run",
    "pyplot",
]
