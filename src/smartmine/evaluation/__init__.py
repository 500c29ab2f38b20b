"""Evaluation of embeddings: retrieval metrics (Recall@K, NMI, MAP@R, R-precision, P@1) with chunked exact k-NN."""

from smartmine.evaluation.metrics import is_retrieval_metric, metric_sort_key, retrieval_metrics

__all__ = ["is_retrieval_metric", "metric_sort_key", "retrieval_metrics"]
