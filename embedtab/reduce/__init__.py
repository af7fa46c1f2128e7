"""PCA of embeddings artifacts with saved, re-appliable projections (see stage.py)."""

from embedtab.reduce.pca import Covariance, Projection, Spectrum, fix_signs
from embedtab.reduce.stage import BACKENDS, ReduceOptions, ReduceResult, apply, choose_backend, default_memory, parse_memory, run

__all__ = ["BACKENDS", "Covariance", "Projection", "ReduceOptions", "ReduceResult", "Spectrum", "apply",
           "choose_backend", "default_memory", "fix_signs", "parse_memory", "run"]
