"""``glitchdex check MODEL DATA...``: before fine-tuning, which catalogued glitch tokens the data holds.

Data files are streamed through the model's own tokenizer (any size, a progress bar); the report
lists verified, weakly verified and top-anomalous tokens with counts and first locations, and the
special tokens that appear as plain text. ``--fix OUT`` writes a Hugging Face safetensors copy of
the model whose untrained rows are set to the mean of the trained rows, recorded in the catalog.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from tqdm.auto import tqdm

from catalog.database import CatalogError, ensure_schema, session_factory
from catalog.queries.exports import FLAG_ORDER, FlaggedToken, ModelRuns, flagged_tokens, model_runs, ordinary_token_ids
from ingest.compute.data_check import DataScan, batched, read_records, scan_batch, watched_mask
from ingest.compute.embedding_fix import set_rows_to_trained_mean
from ingest.load.models import LoadedModel, load
from ingest.stages.embedding_fix import record_embedding_fix

FAIL_ON = ("verified", "anomalous")
FIX_ROWS = ("verified", "anomalous")
DEFAULT_ANOMALOUS = 200
ENCODE_BATCH = 256


@dataclass(frozen=True)
class CheckOptions:
    fail_on: str | None = None
    n_anomalous: int = DEFAULT_ANOMALOUS
    fix_out: Path | None = None
    fix_rows: str = "verified"
    device: str = "cpu"
    show_progress: bool = False


@dataclass
class CheckReport:
    model_name: str
    scan: DataScan
    flagged: dict[int, FlaggedToken]
    failed: bool = False
    fix_run_id: int | None = None
    fixed_rows: dict[str, int] = field(default_factory=dict)

    def found(self, reason: str) -> list[tuple[FlaggedToken, int]]:
        """Flagged tokens with this reason that the data holds, most frequent first."""
        hits = [(self.flagged[t], n) for t, n in self.scan.tokens.counts.items() if self.flagged[t].reason == reason]
        return sorted(hits, key=lambda hit: (-hit[1], hit[0].token_id))


def check_data(engine: Engine, model_name: str, paths: list[Path], options: CheckOptions = CheckOptions(), loaded: LoadedModel | None = None) -> CheckReport:
    """Scan ``paths`` with the catalogued model's tokenizer; fix a copy of the model if asked.
    ``loaded`` (weights included for a fix) is modified in place by the fix."""
    ensure_schema(engine)
    for path in paths:
        if not path.is_file():
            raise CatalogError(f"no such data file {str(path)!r}")
    if options.fix_out is not None and options.fix_out.exists() and any(options.fix_out.iterdir()):
        raise CatalogError(f"--fix output folder {str(options.fix_out)!r} exists and is not empty")
    with session_factory(engine)() as session:
        runs = model_runs(session, model_name)
        flagged = flagged_tokens(session, runs, options.n_anomalous)
        ordinary = ordinary_token_ids(session, runs.model.tokenizer_id) if options.fix_out else []
    loaded = loaded or load(runs.model.spec, with_weights=options.fix_out is not None, device=options.device)
    if loaded.revision != runs.model.revision:
        raise CatalogError(f"{runs.model.spec!r} now has revision {loaded.revision[:12]}, the catalog has {runs.model.revision[:12]}: ingest it again")

    report = CheckReport(runs.model.name, scan_files(loaded, paths, flagged, options.show_progress), flagged)
    found = {flagged[t].reason for t in report.scan.tokens.counts}
    failing = {"verified": {"verified"}, "anomalous": set(FLAG_ORDER)}.get(options.fail_on or "", set())
    report.failed = bool(found & failing)
    if options.fix_out is not None:
        fix_model_copy(engine, runs, loaded, flagged, ordinary, options, report)
    return report


def scan_files(loaded: LoadedModel, paths: list[Path], flagged: dict[int, FlaggedToken], show_progress: bool) -> DataScan:
    vocabulary = loaded.vocabulary
    mask = watched_mask(flagged, max(vocabulary.token_ids) + 1)
    specials = sorted({text for t in vocabulary.special_ids if (text := vocabulary.token_bytes(t).decode("utf-8", "replace"))})
    scan = DataScan()
    with tqdm(unit=" records", disable=not show_progress, desc="tokenizing") as progress:
        for path in paths:
            for batch in batched(read_records(path), ENCODE_BATCH):
                scan_batch(scan, batch, vocabulary.encode_batch, mask, specials)
                progress.update(len(batch))
    return scan


def fix_model_copy(
    engine: Engine, runs: ModelRuns, loaded: LoadedModel, flagged: dict[int, FlaggedToken], ordinary: list[int], options: CheckOptions, report: CheckReport
) -> None:
    """Set the chosen untrained rows to the mean of the other ordinary rows, save the copy, record the rows."""
    if loaded.model is None:
        raise CatalogError(f"--fix needs a model with weights; {runs.model.name!r} is a tokenizer-only vocabulary")
    reasons = FLAG_ORDER[:2] if options.fix_rows == "verified" else FLAG_ORDER
    untrained = sorted(t for t, flag in flagged.items() if flag.reason in reasons)
    if not untrained:
        raise CatalogError(f"no {options.fix_rows} tokens in the catalog for {runs.model.name!r}: nothing to fix")
    start = time.perf_counter()
    trained = [t for t in ordinary if t not in flagged]
    fixes = {"input": set_rows_to_trained_mean(loaded.model.get_input_embeddings().weight, untrained, trained, options.device)}
    if loaded.tied_embeddings is False:
        fixes["output"] = set_rows_to_trained_mean(loaded.model.get_output_embeddings().weight, untrained, trained, options.device)
    save_hf_folder(loaded, options.fix_out)
    params = {"output": str(options.fix_out.resolve()), "rows": options.fix_rows, "n_anomalous": options.n_anomalous, "n_trained_rows": len(trained)}
    report.fix_run_id = record_embedding_fix(
        engine, runs.model.id, runs.model.tokenizer_id, params, fixes, {t: flagged[t].reason for t in untrained},
        time.perf_counter() - start, options.device,
    )
    report.fixed_rows = {matrix: len(fix.token_ids) for matrix, fix in fixes.items()}


def save_hf_folder(loaded: LoadedModel, folder: Path) -> None:
    """A Hugging Face folder: config, safetensors weights, the tokenizer files (a GGUF model converted on the way)."""
    folder.mkdir(parents=True, exist_ok=True)
    _forget_gguf_origin(loaded.model)
    loaded.model.save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)


def _forget_gguf_origin(model) -> None:
    """transformers refuses to save a model loaded from GGUF; ours holds plain de-quantized tensors (no packed
    GGUF blocks), so it is an ordinary checkpoint once the loader's quantizer record is dropped."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if getattr(quantizer, "packed_modules", None) or getattr(quantizer, "quantized", None):
        raise CatalogError(f"cannot save a copy: the model keeps {type(quantizer).__name__} blocks packed (load it de-quantized)")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def format_report(report: CheckReport, n_anomalous: int) -> list[str]:
    scan = report.scan
    lines = [f"{scan.n_records} records, {scan.n_tokens} tokens of {report.model_name}'s tokenizer"]
    titles = {
        "verified": "verified glitch tokens",
        "weakly_verified": "weakly verified tokens",
        "anomalous": f"anomalous tokens (top {n_anomalous} of the anomaly ranking, not verified)",
    }
    for reason in FLAG_ORDER:
        hits = report.found(reason)
        lines.append(f"{titles[reason]}: {len(hits)} distinct, {sum(n for _, n in hits)} occurrences")
        lines += [_hit_line(flag.token_id, flag.text, n, scan.tokens.locations[flag.token_id]) for flag, n in hits]
    specials = sorted(scan.special_texts.counts.items(), key=lambda kv: -kv[1])
    lines.append(f"special tokens written as plain text: {len(specials)} distinct, {sum(n for _, n in specials)} occurrences")
    lines += [_hit_line(None, text, n, scan.special_texts.locations[text]) for text, n in specials]
    if report.fix_run_id is not None:
        changed = ", ".join(f"{n} {matrix} rows" for matrix, n in report.fixed_rows.items())
        lines.append(f"fixed copy written: {changed} set to the mean of trained rows (embedding_fix run {report.fix_run_id})")
    return lines


def _hit_line(token_id: int | None, text: str, count: int, locations: list[str]) -> str:
    shown = "" if token_id is None else f"{token_id:>7} "
    more = ", ..." if count > len(locations) else ""
    return f"  {shown}{text!r:<30} {count:>6}x  {', '.join(locations)}{more}"
