"""Jobs: the model registry, the pipeline that runs stages, planning, re-ingestion, executors and the CLI."""
