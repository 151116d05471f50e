"""The Python API on real SmolLM2 verdicts; the README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

import glitchdex
from catalog.database import URL_ENV
from tests.conftest import SMOLLM2

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_example() -> str:
    section = README.read_text(encoding="utf-8").split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(smollm2_probed, monkeypatch, capsys):
    monkeypatch.setenv(URL_ENV, smollm2_probed.url.render_as_string(hide_password=False))
    names: dict = {}
    exec(compile(readme_python_example(), str(README), "exec"), names)
    assert capsys.readouterr().out.count("shape: (") == 4  # four DataFrames printed
    assert names["verified"].height > 0 and names["tokens"].height == 49_152


@pytest.fixture
def cat(smollm2_probed):
    with glitchdex.open(smollm2_probed.url.render_as_string(hide_password=False)) as catalog:
        yield catalog


def test_tokens_frame_matches_the_catalog(cat):
    tokens = cat.tokens(SMOLLM2)
    assert tokens.height == 49_152 and tokens["anomaly_rank"][0] == 1
    verified = cat.tokens(SMOLLM2, verdict="verified")
    assert verified.height > 0 and set(verified["verdict"]) == {"verified"}
    assert (verified["max_target_prob"] < 0.01).all()
    top = cat.tokens(SMOLLM2, top=10, category="normal")
    assert top.height <= 10 and set(top["category"]) == {"normal"}


def test_models_token_and_transcripts(cat):
    models = cat.models()
    assert models.height == 1 and models["name"][0].startswith("SmolLM2") and models["tokenizer_kind"][0] == "byte_level"
    the = cat.token(" the")
    assert {"Ġthe", "the"} <= set(the["piece"])  # one normalised string
    assert cat.token("SolidGoldMagikarp-not-a-token").columns == ["tokenizer", "token_id", "piece", "category"]
    token_id = cat.tokens(SMOLLM2, verdict="verified")["token_id"][0]
    transcripts = cat.probe_transcripts(SMOLLM2, token_id)
    assert transcripts["template"].to_list() == ["echo_fewshot", "continue_list"]
    assert isinstance(transcripts, pl.DataFrame) and not transcripts["passed"].any()


def test_errors_are_one_line_catalog_errors(cat, smollm2_catalog):
    with pytest.raises(glitchdex.CatalogError, match="no model 'nonexistent'"):
        cat.tokens("nonexistent")
    with glitchdex.open(smollm2_catalog.url.render_as_string(hide_password=False)) as unprobed:
        with pytest.raises(glitchdex.CatalogError, match="has not been probed yet"):
            unprobed.tokens(SMOLLM2, verdict="verified")
