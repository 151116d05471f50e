"""Stages: each reads the catalog, runs its computation and writes its tables under an ``ingest_run``."""
