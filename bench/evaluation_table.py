"""The README's detection-quality table, from the latest evaluation of each model in a catalog.

    PYTHONPATH=. python bench/evaluation_table.py --db sqlite:///eval.sqlite SmolLM2 gemma-3

Prints one markdown row per indicator and model (R-precision, recall at 2 % and 10 %, precision
at 2 %, average precision; 95 % Wilson intervals where the truth is a sample), the union of every
indicator, and each run's calibration and learned-combination statements. Run it after
`glitchdex probe MODEL --mode sweep` and `glitchdex evaluate MODEL` for every model listed.
"""

from __future__ import annotations

import argparse

from catalog.database import make_engine, session_factory
from catalog.queries import evaluation_rows, latest_evaluation
from ingest.compute.evaluation import ANY_INDICATOR, LEARNED

INDICATORS = ("anomaly_score", LEARNED, "first_forward", "centroid_dist", "embed_norm", "identical_rows", "head_projection", ANY_INDICATOR)
COLUMNS = (("R", "precision"), ("2%", "recall"), ("10%", "recall"), ("2%", "precision"))


def figure(row, measure: str) -> str:
    value = getattr(row, measure)
    if value is None:
        return "–"
    low, high = getattr(row, f"{measure}_low"), getattr(row, f"{measure}_high")
    return f"{value:.3f}" if low is None else f"{value:.3f} [{low:.2f}, {high:.2f}]"


def table(db: str, models: list[str]) -> None:
    print("| indicator | model | R-precision | recall @ 2 % | recall @ 10 % | precision @ 2 % | average precision |")
    print("|---|---|---|---|---|---|---|")
    notes = []
    with session_factory(make_engine(db))() as session:
        runs = [latest_evaluation(session, model) for model in models]
        rows = {run.model: {(r.indicator, r.budget): r for r in evaluation_rows(session, run.run_id)} for run in runs}
    for indicator in INDICATORS:
        for run in runs:
            found = rows[run.model]
            if (indicator, "2%") not in found:
                continue
            cells = [figure(found[(indicator, budget)], measure) if (indicator, budget) in found else "–" for budget, measure in COLUMNS]
            ap = found[(indicator, "2%")].average_precision
            print(f"| `{indicator}` | {run.model} | {' | '.join(cells)} | {'–' if ap is None else f'{ap:.3f}'} |")
    for run in runs:
        first = next(iter(rows[run.model].values()))
        scope = "sample" if run.params["sampled"] else "whole vocabulary"
        notes.append(f"{run.model}: {first.n_truth} verified of {first.n_ranked} ranked ({scope}); best: {run.params['best_indicator']}")
        notes.append(f"  calibration: {run.statement}")
        notes.append(f"  learned: {run.params.get('learned', {}).get('statement', 'not computed')}")
    print("\n".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    table(args.db, args.models)


if __name__ == "__main__":
    main()
