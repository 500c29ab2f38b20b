"""Evaluation of embeddings: retrieval metrics (Recall@K, NMI, MAP@R, R-precision, P@1) with chunked exact k-NN."""

from smartmine.evaluation.metrics import retrieval_metrics

__all__ = ["retrieval_metrics"]
