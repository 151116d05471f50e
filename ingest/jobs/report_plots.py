"""The markdown report's figures: PNG files drawn with matplotlib's object API (no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from matplotlib.figure import Figure

VERDICT_COLORS = {"verified": "#d62728", "weakly_verified": "#ff7f0e", "rejected": "#1f77b4"}


def plot_indicators(tokens: pl.DataFrame, folder: Path) -> tuple[Path, ...]:
    """Two figures of a model's tokens: unused_cos against the embedding norm, and the unused_cos histogram,
    probed tokens coloured by verdict. Returns the files written in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return _scatter(tokens, folder / "unused_cos_vs_norm.png"), _histogram(tokens, folder / "unused_cos_histogram.png")


def _scatter(tokens: pl.DataFrame, path: Path) -> Path:
    figure = Figure(figsize=(7, 5), dpi=100)
    axes = figure.subplots()
    axes.scatter(tokens["unused_cos"], tokens["embed_norm"], s=2, c="#bbbbbb", label="all tokens", rasterized=True)
    for verdict, color in VERDICT_COLORS.items():
        chosen = tokens.filter(pl.col("verdict") == verdict)
        if chosen.height:
            axes.scatter(chosen["unused_cos"], chosen["embed_norm"], s=14, c=color, label=f"{verdict} ({chosen.height})")
    axes.set_xlabel("unused_cos (high = like unused tokens)")
    axes.set_ylabel("input-embedding L2 norm")
    axes.legend(loc="best", fontsize="small")
    figure.savefig(path)
    return path


def _histogram(tokens: pl.DataFrame, path: Path) -> Path:
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    axes.hist(tokens["unused_cos"].drop_nulls(), bins=100, color="#888888", log=True, label="all tokens")
    for verdict, color in VERDICT_COLORS.items():
        values = tokens.filter(pl.col("verdict") == verdict)["unused_cos"].drop_nulls()
        if values.len():
            axes.hist(values, bins=100, range=(tokens["unused_cos"].min(), tokens["unused_cos"].max()), color=color, log=True, label=verdict)
    axes.set_xlabel("unused_cos")
    axes.set_ylabel("tokens (log)")
    axes.legend(loc="best", fontsize="small")
    figure.savefig(path)
    return path
