"""The glitchdex command: output, exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import text

from catalog.database import make_engine
from ingest.jobs.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_tokenizer_only_then_query(capsys, db_url):
    code, _, err = run(capsys, "--db", db_url, "ingest", "tiktoken:o200k_base")
    assert code == 0 and "tokenizer_facts: succeeded" in err
    code, out, _ = run(capsys, "--db", db_url, "models")
    assert code == 0 and "o200k_base" in out and "no embedding stats" in out
    code, out, _ = run(capsys, "--db", db_url, "token", " hello")
    assert code == 0 and "o200k_base" in out
    code, _, err = run(capsys, "--db", db_url, "top", "o200k")
    assert code == 2 and "has no embedding statistics" in err


def test_top_lists_smollm2_undertrained_tokens(capsys, smollm2_catalog):
    url = smollm2_catalog.url.render_as_string(hide_password=False)
    code, out, _ = run(capsys, "--db", url, "top", "SmolLM2", "-n", "30")
    assert code == 0 and "firstsum" in out and "PlaneProtection" in out
    code, out, _ = run(capsys, "--db", url, "top", "SmolLM2", "--by", "centroid_dist", "-n", "50", "--include-special")
    assert code == 0 and "MetaInfoClass" in out


def test_missing_model_is_one_line_and_leaves_the_database_unchanged(capsys, engine, db_url):
    with engine.connect() as conn:
        before = conn.scalar(text("select count(*) from model"))
    code, out, err = run(capsys, "--db", db_url, "ingest", "./missing/model.gguf")
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("glitchdex: error:")]
    assert errors == [err.strip().splitlines()[-1]] and "model not found" in errors[0]
    with engine.connect() as conn:
        assert conn.scalar(text("select count(*) from model")) == before


def test_database_ahead_of_code_is_a_clear_error(capsys, engine, db_url):
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = 'abcdef'"))
    code, _, err = run(capsys, "--db", db_url, "models")
    assert code == 2 and "newer than this glitchdex" in err


def test_unreachable_database_url_is_a_clear_error(capsys, tmp_path):
    code, _, err = run(capsys, "--db", f"sqlite:///{tmp_path}/no/such/dir/x.sqlite", "models")
    assert code == 2 and err.startswith("glitchdex: error: cannot open database")


def test_db_command_upgrades_and_downgrades(capsys, db_url):
    code, out, _ = run(capsys, "--db", db_url, "db", "upgrade")
    assert code == 0 and "database revision: " in out and "empty" not in out
    code, out, _ = run(capsys, "--db", db_url, "db", "downgrade")
    assert code == 0 and "database revision: empty" in out
    assert make_engine(db_url).connect().execute(text("select count(*) from alembic_version")).scalar() == 0


def test_console_entry_point_runs(db_url):
    result = subprocess.run(
        [sys.executable, "-m", "ingest.jobs.cli", "--db", db_url, "token", "x"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "no catalogued tokenizer" in result.stdout
