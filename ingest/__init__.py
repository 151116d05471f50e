"""Ingest jobs: load a model, compute tokenizer facts and embedding statistics, write them to the catalog."""

# Part of every run's key: bump it when a stage's output changes so re-ingestion recomputes it.
__version__ = "0.1.0"
