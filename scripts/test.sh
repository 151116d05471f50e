#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite (what CI runs).
source "$(dirname "$0")/install.sh"
python -m pytest -q -p no:cacheprovider "$@"
