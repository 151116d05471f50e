"""Pure computations over tensors and token strings (no SQL): tokenizer facts, embedding indicators,
probes and verdict rules, prompt search, noken generators, adaptive batching."""
