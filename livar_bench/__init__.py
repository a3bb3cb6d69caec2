"""livar-bench: a benchmark harness for federated aggregation of LoRA-tuned Vision Transformers."""

__version__ = "0.1.0"
