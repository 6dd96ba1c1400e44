"""Latency measurement on the host."""

from .latency import LatencyResult, measure_latency

__all__ = ["LatencyResult", "measure_latency"]
