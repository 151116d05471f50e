"""`glitchdex export` on real SmolLM2 verdicts, each format read back by its consumer's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy.orm import Session

from catalog.queries import token_verdicts, top_anomalous
from ingest.jobs.cli import main
from tests.conftest import SMOLLM2


def export(capsys, engine, tmp_path: Path, fmt: str, *options: str, name: str | None = None) -> Path:
    path = tmp_path / (name or f"export.{fmt}")
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--db", url, "export", "SmolLM2", "--format", fmt, "-o", str(path), *options]) == 0
    assert f"to {path}" in capsys.readouterr().out
    return path


@pytest.fixture(scope="module")
def verdicts(smollm2_probed):
    with Session(smollm2_probed) as session:
        return {row.token_id: row for row in token_verdicts(session, SMOLLM2)}


def verified_ids(verdicts) -> set[int]:
    return {token_id for token_id, row in verdicts.items() if row.verdict == "verified"}


@pytest.mark.parametrize(("fmt", "read"), [("csv", pl.read_csv), ("parquet", pl.read_parquet), ("json", pl.read_json)])
def test_token_table_round_trips_through_polars(capsys, smollm2_probed, verdicts, tmp_path, fmt, read):
    frame = read(export(capsys, smollm2_probed, tmp_path, fmt))
    assert frame.height == 49_152
    assert {"token_id", "piece", "text", "category", "anomaly_rank", "unused_cos", "embed_norm", "verdict", "max_target_prob"} <= set(frame.columns)
    assert frame["anomaly_rank"].to_list()[:3] == [1, 2, 3]  # most anomalous first
    probed = frame.filter(pl.col("verdict").is_not_null())
    assert dict(zip(probed["token_id"], probed["verdict"])) == {t: row.verdict for t, row in verdicts.items()}
    the = frame.filter(pl.col("text") == " the").row(0, named=True)
    assert the["category"] == "normal" and the["anomaly_rank"] > 20_000 and the["verdict"] is None


def test_filters_select_by_verdict_category_and_rank(capsys, smollm2_probed, verdicts, tmp_path):
    verified = pl.read_csv(export(capsys, smollm2_probed, tmp_path, "csv", "--verdict", "verified", name="v.csv"))
    assert set(verified["token_id"]) == verified_ids(verdicts) and verified_ids(verdicts)
    top = pl.read_parquet(export(capsys, smollm2_probed, tmp_path, "parquet", "--top", "50", "--category", "normal", name="t.parquet"))
    assert top.height <= 50 and top["anomaly_rank"].max() <= 50 and set(top["category"]) == {"normal"}


def test_magikarp_jsonl_has_magikarp_fields_and_our_verdicts(capsys, smollm2_probed, verdicts, tmp_path):
    path = export(capsys, smollm2_probed, tmp_path, "magikarp-jsonl", "--top", "200")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 200 and records[0]["anomaly_rank"] == 1
    assert all({"i", "raw_vocab", "decoded", "category", "indicators", "indicator_names", "main_indicator"} <= set(r) for r in records)
    checked = [r for r in records if "magikarp" in r]
    assert checked and {r["i"] for r in checked} <= set(verdicts)
    for record in checked:
        row = verdicts[record["i"]]
        assert record["max_prob"] == pytest.approx(row.max_target_prob)
        assert record["magikarp"] == {"verified": "strong_verified", "weakly_verified": "weak_verified"}.get(row.verdict, record["magikarp"])
        assert [v["test_name"] for v in record["verification"]] == ["echo_fewshot", "continue_list"]
        assert max(v["max_prob"] for v in record["verification"]) == pytest.approx(record["max_prob"])


def test_garak_payload_loads_with_garaks_loader(capsys, smollm2_probed, verdicts, tmp_path):
    payloads = pytest.importorskip("garak.payloads")  # installed with --no-deps by scripts/install.sh
    path = export(capsys, smollm2_probed, tmp_path, "garak", name="glitchdex_smollm2.json")
    group = payloads.PayloadGroup("glitchdex_smollm2", path)
    with Session(smollm2_probed) as session:
        expected = [row.text for row in top_anomalous(session, SMOLLM2, limit=49_152) if row.token_id in verified_ids(verdicts)]
    assert group.payloads == list(dict.fromkeys(expected))
    assert group.types == ["Glitch tokens"]
    assert json.loads(path.read_text(encoding="utf-8"))["glitchdex"]["model"].startswith("SmolLM2")


def test_markdown_report_with_plots_beside_it(capsys, smollm2_probed, verdicts, tmp_path):
    path = export(capsys, smollm2_probed, tmp_path, "markdown", name="report.md")
    text = path.read_text(encoding="utf-8")
    for heading in ("## Model", "## Tokens per category", "## Verdicts", "## Detection", "### unused_cos", "## Plots"):
        assert heading in text
    images = sorted((tmp_path / "report_files").glob("*.png"))
    assert len(images) == 2 and all(image.read_bytes().startswith(b"\x89PNG") for image in images)
    assert all(f"(report_files/{image.name})" in text for image in images)
    a_verified = next(iter(verified_ids(verdicts)))
    assert f"| {a_verified} | " in text


def test_export_of_an_unprobed_model_to_garak_is_one_line(capsys, smollm2_catalog, tmp_path):
    url = smollm2_catalog.url.render_as_string(hide_password=False)
    assert main(["--db", url, "export", "SmolLM2", "--format", "garak", "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glitchdex: error: ") and "has not been probed yet" in err and "\n" not in err
    assert not (tmp_path / "x.json").exists()
