#!/usr/bin/env bash
# Install, bring glitchdex.sqlite up to date with models.toml (SmolLM2 through the whole chain:
# statistics, probes, prompts, nokens), then show SmolLM2's most anomalous tokens and its verdicts.
source "$(dirname "$0")/install.sh"
glitchdex reingest
glitchdex top SmolLM2 -n 25
glitchdex verdicts SmolLM2 -n 25
glitchdex status
