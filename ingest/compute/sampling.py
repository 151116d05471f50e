"""A seeded stratified sample of a vocabulary: pure functions, no SQL, no model.

Strata are tokenizer category x band of the anomaly ranking. Glitch tokens
concentrate at the top of the ranking, so the bands over-sample it: each band
receives a fixed share of the sample whatever its size, and within a band the
strata share the band's part in proportion to their populations. A stratum
never gets more than it holds; a share a band cannot use passes to the others.
Every stratum gets at least ``MIN_PER_STRATUM`` tokens (all of a smaller one),
so none is left unrepresented and each has a within-stratum rate; when the
floors exceed the requested size the sample is that much larger.

Each drawn token stands for ``population / sample`` tokens of its stratum: the
weights the evaluation reads back from the stored strata.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# (label, upper bound of the band as a share of the ranking, share of the sample)
BANDS = (("top2%", 0.02, 0.3), ("2-10%", 0.10, 0.3), ("rest", 1.0, 0.4))
MIN_PER_STRATUM = 2


@dataclass(frozen=True)
class Stratum:
    category: str
    band: str
    population: int
    token_ids: tuple[int, ...]  # the drawn tokens, ascending

    def as_params(self) -> dict[str, object]:
        return {"category": self.category, "band": self.band, "population": self.population, "sample": len(self.token_ids), "token_ids": list(self.token_ids)}


def band_of(ranked: Sequence[int]) -> dict[int, str]:
    """Each token's band by its position in ``ranked`` (most anomalous first); the last band takes the rest."""
    cuts = [(label, math.ceil(upper * len(ranked) - 1e-9)) for label, upper, _ in BANDS[:-1]]
    return {
        token_id: next((label for label, cut in cuts if position < cut), BANDS[-1][0]) for position, token_id in enumerate(ranked)
    }


def allocate(sizes: Sequence[int], shares: Sequence[float], n: int, floor: int = 0) -> list[int]:
    """Split ``n`` over groups of ``sizes`` in proportion to ``shares``, capped at each size, after a per-group floor.

    Caps are water-filled: a group whose quota reaches its size is taken whole and the
    rest is re-split among the others. Fractions go by largest remainder, ties to the
    first group, so the split is deterministic.
    """
    taken = [min(size, floor) for size in sizes]
    left = n - sum(taken)
    active = [i for i, size in enumerate(sizes) if size > taken[i] and shares[i] > 0]
    while left > 0 and active:
        total = sum(shares[i] for i in active)
        quota = {i: left * shares[i] / total for i in active}
        full = [i for i in active if quota[i] >= sizes[i] - taken[i]]
        if not full:
            whole = {i: math.floor(quota[i]) for i in active}
            by_remainder = sorted(active, key=lambda i: (-(quota[i] - whole[i]), i))
            for i in active:
                taken[i] += whole[i]
            for i in by_remainder[: left - sum(whole.values())]:
                taken[i] += 1
            break
        for i in full:
            left -= sizes[i] - taken[i]
            taken[i] = sizes[i]
        active = [i for i in active if i not in full]
    return taken


def stratified_sample(categories: Mapping[int, str], ranked: Sequence[int], n: int, seed: int) -> list[Stratum]:
    """A seeded stratified sample of about ``n`` of the tokens in ``categories`` (token id -> category).

    ``ranked``: those tokens, most anomalous first. Returns every non-empty stratum,
    by band then category.
    """
    bands = band_of(ranked)
    members: dict[tuple[str, str], list[int]] = {}
    for token_id in sorted(categories):
        members.setdefault((bands[token_id], categories[token_id]), []).append(token_id)
    labels = [label for label, _, _ in BANDS]
    band_sizes = [sum(len(ids) for (band, _), ids in members.items() if band == label) for label in labels]
    band_n = allocate(band_sizes, [share for _, _, share in BANDS], n)
    rng = random.Random(seed)
    strata = []
    for label, wanted in zip(labels, band_n, strict=True):
        keys = sorted(key for key in members if key[0] == label)
        sizes = [len(members[key]) for key in keys]
        for key, size, take in zip(keys, sizes, allocate(sizes, sizes, wanted, floor=MIN_PER_STRATUM), strict=True):
            strata.append(Stratum(key[1], label, size, tuple(sorted(rng.sample(members[key], take)))))
    return strata


def stratum_weights(strata: Sequence[Mapping[str, object]]) -> dict[int, float]:
    """Each drawn token's weight, population / sample size of its stratum, from the strata as stored (:meth:`Stratum.as_params`)."""
    return {token_id: stratum["population"] / stratum["sample"] for stratum in strata for token_id in stratum["token_ids"]}
