"""``glitchdex export``: a model's tokens, indicators and verdicts in the formats neighbouring tools read.

- ``magikarp-jsonl``: one object per token with the field names of Magikarp's verification files
  (``i``, ``raw_vocab``, ``decoded``, ``category``, ``indicators``, ``indicator_names``,
  ``main_indicator``, ``verification``, ``max_prob``, ``magikarp``) plus glitchdex's own;
- ``markdown``: a per-model report with its plots as PNG files in a folder beside it;
- ``csv`` / ``parquet`` / ``json``: the token table with every indicator and verdict (polars);
- ``garak``: a payload file garak's payload loader reads, listing the verified tokens as strings.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from sqlalchemy import Engine
from sqlalchemy.sql import operators
from sqlalchemy.orm import Session

from catalog.database import CatalogError, ensure_schema, session_factory
from catalog.queries import RANKINGS, indicator_precision
from catalog.queries.exports import (
    ModelRuns,
    TokenSelection,
    category_counts,
    model_runs,
    probe_transcripts_by_token,
    tokens_frame,
    verdict_counts,
)

FORMAT_SUFFIXES = {"magikarp-jsonl": ".jsonl", "markdown": ".md", "csv": ".csv", "parquet": ".parquet", "json": ".json", "garak": ".json"}
FORMATS = tuple(FORMAT_SUFFIXES)
# Magikarp's indicators, lowest = most anomalous, become ours in the order of our ranking (most anomalous = highest unused_cos).
INDICATORS = ("unused_cos", "centroid_dist", "embed_norm")
MAGIKARP_STRONG_REJECTION = 0.9  # Magikarp's line between weak and strong rejections
GARAK_PAYLOAD_TYPE = "Glitch tokens"
REPORT_TOP = 15


@dataclass(frozen=True)
class ExportResult:
    path: Path
    n_tokens: int
    extra_files: tuple[Path, ...] = ()


def export_model(engine: Engine, model_name: str, fmt: str, out: Path | None = None, selection: TokenSelection = TokenSelection()) -> ExportResult:
    """Write ``model_name``'s selected tokens as ``fmt`` to ``out`` (default: ``<model>.<suffix>`` here)."""
    if fmt not in FORMAT_SUFFIXES:
        raise CatalogError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ensure_schema(engine)
    with session_factory(engine)() as session:
        runs = model_runs(session, model_name)
        path = out or Path(default_file_name(runs.model.name, fmt))
        if path.parent and not path.parent.is_dir():
            raise CatalogError(f"cannot write {str(path)!r}: no such folder {str(path.parent)!r}")
        return WRITERS[fmt](session, runs, selection, path)


def default_file_name(model_name: str, fmt: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name)
    return f"glitchdex_{stem}{FORMAT_SUFFIXES[fmt]}" if fmt == "garak" else f"{stem}{FORMAT_SUFFIXES[fmt]}"


# --- the token table (polars) ---------------------------------------------------------


def _table_writer(write: Callable[[pl.DataFrame, Path], None]) -> Callable[[Session, ModelRuns, TokenSelection, Path], ExportResult]:
    def write_table(session: Session, runs: ModelRuns, selection: TokenSelection, path: Path) -> ExportResult:
        frame = tokens_frame(session, runs, selection)
        write(frame, path)
        return ExportResult(path, frame.height)

    return write_table


# --- Magikarp's verification JSONL -------------------------------------------------------


def magikarp_label(verdict: str | None, max_prob: float | None) -> str | None:
    """Magikarp's verdict names for ours; its rejections are strong above 0.9 probability."""
    if verdict == "verified":
        return "strong_verified"
    if verdict == "weakly_verified":
        return "weak_verified"
    if verdict == "rejected":
        return "strong_rejected" if max_prob is not None and max_prob > MAGIKARP_STRONG_REJECTION else "weak_rejected"
    return None


def magikarp_record(token: dict, probes: list[dict]) -> dict:
    record = {
        "i": token["token_id"],
        "raw_vocab": token["piece"],
        "decoded": token["text"],
        "category": token["category"],
        "anomaly_rank": token["anomaly_rank"],
    }
    if token["unused_cos"] is not None:
        record |= {
            "indicators": [token[name] for name in INDICATORS],
            "indicator_names": list(INDICATORS),
            "main_indicator": token["unused_cos"],
        }
    label = magikarp_label(token["verdict"], token["max_target_prob"])
    if label is not None:
        record |= {
            "verification": [
                {
                    "test_name": probe["template"],
                    "encodeable": not token["is_unreachable"],
                    "output": probe["output"],
                    "max_prob": probe["target_prob"],
                }
                for probe in probes
            ],
            "max_prob": token["max_target_prob"],
            "magikarp": label,
            "verdict": token["verdict"],
            "failure_category": token["failure_category"],
        }
    return record


def write_magikarp_jsonl(session: Session, runs: ModelRuns, selection: TokenSelection, path: Path) -> ExportResult:
    tokens = tokens_frame(session, runs, selection).to_dicts()
    probed = [t["token_id"] for t in tokens if t["verdict"] is not None]
    transcripts = probe_transcripts_by_token(session, runs.probes_run_id, probed) if probed else {}
    with path.open("w", encoding="utf-8") as handle:
        for token in tokens:
            handle.write(json.dumps(magikarp_record(token, transcripts.get(token["token_id"], []))) + "\n")
    return ExportResult(path, len(tokens))


# --- garak payload -------------------------------------------------------------------------


def write_garak_payload(session: Session, runs: ModelRuns, selection: TokenSelection, path: Path) -> ExportResult:
    if runs.probes_run_id is None:
        raise CatalogError(f"model {runs.model.name!r} has not been probed yet: run `glitchdex probe {runs.model.spec}` (garak payloads list verified tokens)")
    if selection.verdict is None:
        selection = TokenSelection("verified", selection.category, selection.top)
    tokens = tokens_frame(session, runs, selection).filter(pl.col("text").str.len_chars() > 0)
    texts = tokens.unique(subset="text", keep="first", maintain_order=True)
    payload = {
        "garak_payload_name": f"glitchdex: {selection.verdict} glitch tokens of {runs.model.name}",
        "payload_types": [GARAK_PAYLOAD_TYPE],
        "detector_name": "",
        "payloads": texts["text"].to_list(),
        "lang": "*",
        "glitchdex": {
            "model": runs.model.name,
            "revision": runs.model.revision,
            "probes_run": runs.probes_run_id,
            "verdict": selection.verdict,
            "token_ids": texts["token_id"].to_list(),
        },
    }
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return ExportResult(path, texts.height)


# --- markdown report ----------------------------------------------------------------------


def write_markdown_report(session: Session, runs: ModelRuns, selection: TokenSelection, path: Path) -> ExportResult:
    from ingest.jobs.report_plots import plot_indicators

    model = runs.model
    tokens = tokens_frame(session, runs, selection)
    lines = [f"# Under-trained tokens of {model.name}", ""]
    lines += [f"Exported from the glitchdex catalog on {dt.date.today().isoformat()}{_selection_note(selection)}.", ""]
    lines += ["## Model", "", *_table(["field", "value"], _model_facts(runs)), ""]
    lines += ["## Tokens per category", "", *_table(["category", "tokens"], category_counts(session, model.tokenizer_id).items()), ""]
    images: tuple[Path, ...] = ()
    if runs.probes_run_id is not None:
        lines += [f"## Verdicts (probes run {runs.probes_run_id})", ""]
        lines += [*_table(["verdict", "tokens"], verdict_counts(session, runs.probes_run_id).items()), ""]
        lines += ["## Detection", "", "Share of each indicator's top candidates (and of random controls) that the probes verified.", ""]
        lines += [*_table(["indicator", "selected", "tested", "verified", "weakly verified", "precision"], _detection_rows(session, model.name)), ""]
        lines += _top_tokens_per_indicator(tokens, selection.verdict or "verified")
    if runs.stats_run_id is not None:
        images = plot_indicators(tokens, path.parent / f"{path.stem}_files")
        lines += ["## Plots", "", *(f"![{image.stem}]({image.parent.name}/{image.name})" for image in images), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return ExportResult(path, tokens.height, images)


def _selection_note(selection: TokenSelection) -> str:
    parts = [f"{name} = {value}" for name, value in (("verdict", selection.verdict), ("category", selection.category), ("top", selection.top)) if value is not None]
    return f" (tokens selected by {', '.join(parts)})" if parts else ""


def _model_facts(runs: ModelRuns) -> list[tuple[str, object]]:
    model = runs.model
    facts = [
        ("name", model.name),
        ("spec", f"`{model.spec}`"),
        ("revision", f"`{model.revision}`"),
        ("architecture", model.architecture),
        ("embedding rows", model.vocab_size),
        ("d_model", model.hidden_size),
        ("tied embeddings", model.tied_embeddings),
        ("parameters", model.n_params),
        ("tokenizer", f"{model.tokenizer.name} ({model.tokenizer.kind}, {model.tokenizer.vocab_size} tokens, {model.tokenizer.n_special} special)"),
        ("embedding_stats run", runs.stats_run_id),
        ("probes run", runs.probes_run_id),
    ]
    return [(name, "–" if value is None else value) for name, value in facts]


def _detection_rows(session: Session, model_name: str) -> list[tuple]:
    return [
        (r.indicator, r.n_selected, r.n_tested, r.n_verified, r.n_weakly_verified, "–" if r.precision is None else f"{r.precision:.2f}")
        for r in indicator_precision(session, model_name)
    ]


def _top_tokens_per_indicator(tokens: pl.DataFrame, verdict: str) -> list[str]:
    chosen = tokens.filter(pl.col("verdict") == verdict)
    lines = [f"## Top {verdict} tokens per indicator", ""]
    if chosen.is_empty():
        return [*lines, f"No {verdict} tokens in this selection.", ""]
    for indicator, ordering in RANKINGS.items():
        # The order `glitchdex top --by` uses: anomaly_score sorts by anomaly_rank, unused_cos descending, ...
        column, descending = ordering.element.key, ordering.modifier is operators.desc_op
        top = chosen.sort(column, descending=descending, nulls_last=True).head(REPORT_TOP)
        rows = [
            (r["token_id"], _code(r["piece"]), _code(r["text"]), r["category"], _number(r[indicator]), _number(r["max_target_prob"]), r["failure_category"] or "–")
            for r in top.iter_rows(named=True)
        ]
        lines += [f"### {indicator}", "", *_table(["id", "piece", "text", "category", indicator, "max target prob", "failure"], rows), ""]
    return lines


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _code(text: str) -> str:
    """A token's text as inline code a Markdown table survives (pipes and newlines escaped)."""
    shown = json.dumps(text, ensure_ascii=False)[1:-1].replace("|", "\\|").replace("`", "ˋ")
    return f"`{shown}`" if shown.strip() else f"`{shown}` (blank)"


def _table(header: list[str], rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(str(v) for v in row) + " |" for row in rows)]


WRITERS: dict[str, Callable[[Session, ModelRuns, TokenSelection, Path], ExportResult]] = {
    "magikarp-jsonl": write_magikarp_jsonl,
    "markdown": write_markdown_report,
    "csv": _table_writer(lambda frame, path: frame.write_csv(path)),
    "parquet": _table_writer(lambda frame, path: frame.write_parquet(path)),
    "json": _table_writer(lambda frame, path: frame.write_json(path)),
    "garak": write_garak_payload,
}
