"""`glitchdex check` on real SmolLM2 verdicts: the exit status gates on verified tokens; --fix writes a
transformers-loadable copy whose changed rows are the trained mean and are recorded."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import polars as pl
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.database import make_engine
from catalog.queries import token_verdicts
from catalog.queries.exports import model_runs, ordinary_token_ids
from catalog.schema import EmbeddingFix, IngestRun
from ingest.jobs.check import CheckOptions, check_data
from ingest.jobs.cli import main
from tests.conftest import SMOLLM2, fresh_database


@pytest.fixture(scope="module")
def verified(smollm2_probed):
    with Session(smollm2_probed) as session:
        return token_verdicts(session, SMOLLM2, verdict="verified")


def run_check(capsys, engine, *argv: str) -> tuple[int, str, str]:
    code = main(["--db", engine.url.render_as_string(hide_password=False), "check", SMOLLM2, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}]}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_fail_on_verified_gates_on_real_verdicts(capsys, smollm2_probed, verified, tmp_path):
    glitch = verified[0]
    clean = write_jsonl(tmp_path / "clean.jsonl", ["Hello, how are you?", "The cat sat on the mat."])
    text = tmp_path / "notes.txt"
    text.write_text("plain line\nanother <|im_end|> line\n", encoding="utf-8")
    parquet = tmp_path / "rows.parquet"
    pl.DataFrame({"prompt": ["What is 2+2?", "Name a colour."], "id": [1, 2]}).write_parquet(parquet)

    # The stricter gate (any reported token) passes ordinary text too.
    code, out, _ = run_check(capsys, smollm2_probed, str(clean), str(text), str(parquet), "--fail-on", "anomalous")
    assert code == 0, out
    assert "anomalous tokens (top 200 of the anomaly ranking, not verified): 0 distinct" in out
    assert "6 records" in out and "verified glitch tokens: 0 distinct" in out
    assert "'<|im_end|>'" in out and f"{text}:2" in out  # a special token's text in plain data

    glitch_text = glitch.piece.replace("Ġ", " ")
    dirty = write_jsonl(tmp_path / "dirty.jsonl", ["fine", f"call{glitch_text} twice:{glitch_text}"])
    code, out, _ = run_check(capsys, smollm2_probed, str(dirty), "--fail-on", "verified")
    assert code == 1
    assert "verified glitch tokens: 1 distinct, 2 occurrences" in out and f"{dirty}:2" in out and str(glitch.token_id) in out


def test_fix_writes_a_loadable_copy_and_records_the_rows(smollm2, smollm2_probed, verified, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = smollm2.input_embeddings().clone()
    with fresh_database(tmp_path, template=smollm2_probed) as url:
        engine = make_engine(url)
        out = tmp_path / "fixed"
        report = check_data(engine, SMOLLM2, [write_jsonl(tmp_path / "d.jsonl", ["hi"])], CheckOptions(fix_out=out), loaded=copy.deepcopy(smollm2))
        with Session(engine) as session:
            runs = model_runs(session, SMOLLM2)
            ordinary = ordinary_token_ids(session, runs.model.tokenizer_id)
            run = session.scalars(select(IngestRun).where(IngestRun.stage == "embedding_fix")).one()
            rows = session.scalars(select(EmbeddingFix).where(EmbeddingFix.run_id == run.id)).all()
        engine.dispose()

    fixed_ids = sorted({row.token_id for row in rows})
    assert report.fix_run_id == run.id and run.status == "succeeded" and run.params["output"] == str(out.resolve())
    assert {row.matrix for row in rows} == {"input"}  # SmolLM2 ties its unembedding to it
    assert {v.token_id for v in verified} <= set(fixed_ids)
    assert all(row.reason in ("verified", "weakly_verified") for row in rows)

    model = AutoModelForCausalLM.from_pretrained(out)
    weight = model.get_input_embeddings().weight.detach()
    trained = [t for t in ordinary if t not in set(report.flagged)]
    expected = original[trained].mean(dim=0)
    assert run.params["n_trained_rows"] == len(trained)
    torch.testing.assert_close(weight[fixed_ids], expected.expand(len(fixed_ids), -1))
    untouched = [t for t in range(original.shape[0]) if t not in set(fixed_ids)]
    assert torch.equal(weight[untouched], original[untouched])
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()
    assert [row.new_norm for row in rows] == pytest.approx([float(expected.norm())] * len(rows), rel=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("The cat sat.")["input_ids"] == smollm2.tokenizer("The cat sat.")["input_ids"]


def test_bad_input_is_one_line(capsys, smollm2_probed, tmp_path):
    code, _, err = run_check(capsys, smollm2_probed, str(tmp_path / "missing.jsonl"))
    assert code == 2 and err.strip() == f"glitchdex: error: no such data file {str(tmp_path / 'missing.jsonl')!r}"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("taken")
    data = write_jsonl(tmp_path / "d.jsonl", ["hi"])
    code, _, err = run_check(capsys, smollm2_probed, str(data), "--fix", str(tmp_path / "out"))
    assert code == 2 and "exists and is not empty" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{broken\n')
    code, _, err = run_check(capsys, smollm2_probed, str(bad))
    assert code == 2 and f"{bad}:2: not JSON" in err
