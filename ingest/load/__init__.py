"""Model loading: resolve a spec (hub id, folder, GGUF, PyPI package, tiktoken name) and read its vocabulary."""
