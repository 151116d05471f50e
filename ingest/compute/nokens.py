"""Nokens: synthetic vectors put where a token would be, to make glitch behaviour on purpose.

A :class:`VectorSpace` is a set of reference vectors of real tokens: the rows of
the input embedding matrix (space 'input'), or the residual-stream activations
entering one decoder layer at the probe prompts' token slots (space
'residual'). It knows which rows belong to catalogued anomalous tokens and which
to a sample of normal tokens. Each generator is a named, seeded recipe that
builds vectors from those statistics; :func:`describe_vectors` says where a
vector sits relative to the space (norm, centroid distance, per-dimension
z-scores and their percentiles, nearest real tokens).

Generators draw their random numbers on the CPU from a ``torch.Generator``
seeded by :func:`generator_seed`, so the same (space, params, seed) gives the
same vectors on any device.

Shapes: ``n_ref`` reference vectors, ``n`` generated vectors, ``d_model`` width.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from catalog.database import CatalogError


@dataclass(frozen=True)
class VectorSpace:
    """Reference vectors of real tokens and the statistics the generators and descriptions use."""

    vectors: Tensor  # [n_ref, d_model], float32
    token_ids: Tensor  # [n_ref] token id of each reference vector
    anomalous: Tensor  # [n_anomalous] row indices of catalogued anomalous tokens
    normal: Tensor  # [n_normal] row indices of sampled normal tokens

    # Derived once per space: the generators and every chunk's descriptions read them.

    @cached_property
    def centroid(self) -> Tensor:
        """[d_model] mean of every reference vector."""
        return self.vectors.mean(0)

    @cached_property
    def std(self) -> Tensor:
        """[d_model] per-dimension standard deviation of the reference vectors."""
        return self.vectors.std(0).clamp(min=1e-8)

    @cached_property
    def typical_norm(self) -> float:
        """Median norm of the normal tokens' vectors."""
        return self.vectors[self.normal].norm(dim=1).median().item()

    @cached_property
    def sorted_norms(self) -> Tensor:
        """[n_ref] reference norms, ascending (for percentiles)."""
        return self.vectors.norm(dim=1).sort().values

    @cached_property
    def sorted_centroid_dists(self) -> Tensor:
        """[n_ref] reference distances to the centroid, ascending."""
        return (self.vectors - self.centroid).norm(dim=1).sort().values

    @cached_property
    def sorted_rms_z(self) -> Tensor:
        """[n_ref] reference RMS z-scores, ascending."""
        return _rms_z(self.vectors, self.centroid, self.std).sort().values

    @cached_property
    def unit_vectors(self) -> Tensor:
        """[n_ref, d_model] reference vectors scaled to norm 1 (cosines)."""
        return torch.nn.functional.normalize(self.vectors, dim=1)

    @cached_property
    def distinct_tokens(self) -> tuple[Tensor, Tensor]:
        """The distinct token ids [n_tokens], and each row's index among them [n_ref]."""
        return self.token_ids.unique(return_inverse=True)


@dataclass(frozen=True)
class GeneratorParams:
    """How many vectors each generator makes and at which settings; stored with each run."""

    n_random: int = 4  # gaussian_typical, anomalous_shell
    n_pairs: int = 2  # interpolation: (normal, anomalous) pairs
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    n_sources: int = 1  # scaled_token: tokens from each of the normal and anomalous groups
    scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    n_directions: int = 1  # direction_sweep: random directions
    norm_multiples: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class Draw:
    """Vectors from one generator with what each was made from."""

    vectors: Tensor  # [n, d_model]
    details: list[dict[str, Any]]  # per vector: alpha, scale, norm multiple, matched norm...
    source_rows: Tensor  # [n] reference row a vector derives from, -1 if none
    source2_rows: Tensor  # [n] second reference row (interpolation's anomalous end), -1 if none


@dataclass(frozen=True)
class Generated:
    """One generator's draw, its seed, and the run-wide index of its first vector."""

    name: str
    seed: int
    start: int
    draw: Draw

    @property
    def indices(self) -> range:
        return range(self.start, self.start + len(self.draw.vectors))


def _none(n: int) -> Tensor:
    return torch.full((n,), -1, dtype=torch.long)


def _unit_directions(n: int, d_model: int, rng: torch.Generator) -> Tensor:
    """[n, d_model] uniformly random unit vectors."""
    u = torch.randn(n, d_model, generator=rng)
    return u / u.norm(dim=1, keepdim=True)


def _pick(rows: Tensor, n: int, rng: torch.Generator) -> Tensor:
    """n row indices drawn from ``rows`` with replacement."""
    if len(rows) == 0:
        raise CatalogError("the vector space has no rows in a group a generator needs (no anomalous or no normal tokens)")
    return rows[torch.randint(len(rows), (n,), generator=rng)]


def gaussian_typical(space: VectorSpace, params: GeneratorParams, rng: torch.Generator) -> Draw:
    """Random Gaussian directions scaled to the typical (median normal-token) norm."""
    norm = space.typical_norm
    vectors = _unit_directions(params.n_random, space.vectors.shape[1], rng) * norm
    return Draw(vectors, [{"norm": norm}] * params.n_random, _none(params.n_random), _none(params.n_random))


def anomalous_shell(space: VectorSpace, params: GeneratorParams, rng: torch.Generator) -> Draw:
    """Random vectors with the norm and centroid distance of a randomly picked anomalous token.

    v = c + r (cos t c^ + sin t w), w a random unit vector orthogonal to the centroid c,
    so |v - c| = r exactly and |v|^2 = |c|^2 + r^2 + 2 r |c| cos t matches the token's norm
    whenever that is geometrically possible (else the nearest reachable norm).
    """
    rows = _pick(space.anomalous, params.n_random, rng)
    c = space.centroid
    c_norm = c.norm().clamp(min=1e-8)
    c_hat = c / c_norm
    norms = space.vectors[rows].norm(dim=1)  # [n]
    radii = (space.vectors[rows] - c).norm(dim=1)  # [n]
    w = torch.randn(params.n_random, c.shape[0], generator=rng)
    w = w - (w @ c_hat)[:, None] * c_hat
    w = w / w.norm(dim=1, keepdim=True)
    cos_t = ((norms**2 - c_norm**2 - radii**2) / (2 * radii * c_norm).clamp(min=1e-8)).clamp(-1, 1)
    vectors = c + radii[:, None] * (cos_t[:, None] * c_hat + (1 - cos_t**2).sqrt()[:, None] * w)
    details = [{"matched_norm": n, "matched_centroid_dist": r} for n, r in zip(norms.tolist(), radii.tolist())]
    return Draw(vectors, details, rows, _none(params.n_random))


def centroid(space: VectorSpace, _params: GeneratorParams, _rng: torch.Generator) -> Draw:
    """The mean of the reference vectors itself."""
    return Draw(space.centroid[None], [{}], _none(1), _none(1))


def interpolation(space: VectorSpace, params: GeneratorParams, rng: torch.Generator) -> Draw:
    """(1 - alpha) normal + alpha anomalous, for random (normal, anomalous) pairs and every alpha."""
    normal, anomalous = _pick(space.normal, params.n_pairs, rng), _pick(space.anomalous, params.n_pairs, rng)
    alphas = torch.tensor(params.alphas)
    a = alphas.repeat(params.n_pairs)[:, None]  # [n, 1]
    start, end = normal.repeat_interleave(len(alphas)), anomalous.repeat_interleave(len(alphas))
    vectors = (1 - a) * space.vectors[start] + a * space.vectors[end]
    return Draw(vectors, [{"alpha": x} for x in a[:, 0].tolist()], start, end)


def scaled_token(space: VectorSpace, params: GeneratorParams, rng: torch.Generator) -> Draw:
    """Real tokens' vectors (normal and anomalous) times each scale: a norm sweep along a real direction."""
    if any(s <= 0 for s in params.scales):
        raise CatalogError("scaled_token scales must be positive (a zero vector has no nearest token)")
    sources = torch.cat([_pick(space.normal, params.n_sources, rng), _pick(space.anomalous, params.n_sources, rng)])
    scales = torch.tensor(params.scales)
    rows = sources.repeat_interleave(len(scales))
    s = scales.repeat(len(sources))
    return Draw(space.vectors[rows] * s[:, None], [{"scale": x} for x in s.tolist()], rows, _none(len(rows)))


def direction_sweep(space: VectorSpace, params: GeneratorParams, rng: torch.Generator) -> Draw:
    """Random directions at growing multiples of the typical norm."""
    directions = _unit_directions(params.n_directions, space.vectors.shape[1], rng)
    multiples = torch.tensor(params.norm_multiples)
    n = len(directions) * len(multiples)
    vectors = directions.repeat_interleave(len(multiples), 0) * (multiples.repeat(len(directions)) * space.typical_norm)[:, None]
    details = [{"direction": i // len(multiples), "norm_multiple": m} for i, m in enumerate(multiples.repeat(len(directions)).tolist())]
    return Draw(vectors, details, _none(n), _none(n))


GENERATORS: dict[str, Callable[[VectorSpace, GeneratorParams, torch.Generator], Draw]] = {
    "gaussian_typical": gaussian_typical,
    "anomalous_shell": anomalous_shell,
    "centroid": centroid,
    "interpolation": interpolation,
    "scaled_token": scaled_token,
    "direction_sweep": direction_sweep,
}


def generator_seed(run_seed: int, name: str) -> int:
    """Each generator's own seed, so adding or removing one generator leaves the others' vectors unchanged."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{name}".encode()).digest()[:4], "little")


def generate(space: VectorSpace, names: tuple[str, ...], params: GeneratorParams, run_seed: int) -> list[Generated]:
    """Every named generator's vectors, numbered consecutively across generators."""
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise CatalogError(f"unknown noken generator(s) {', '.join(unknown)}; known: {', '.join(GENERATORS)}")
    batches, start = [], 0
    for name in names:
        seed = generator_seed(run_seed, name)
        draw = GENERATORS[name](space, params, torch.Generator().manual_seed(seed))
        batches.append(Generated(name, seed, start, draw))
        start += len(draw.vectors)
    return batches


@dataclass
class VectorDescription:
    """Where vectors sit relative to a space; every field [n] unless noted."""

    norm: Tensor
    norm_pct: Tensor  # % of reference vectors with a smaller norm
    centroid_dist: Tensor
    centroid_dist_pct: Tensor
    centroid_cos: Tensor
    rms_z: Tensor  # root-mean-square per-dimension z-score against the reference mean and std
    rms_z_pct: Tensor
    neighbor_tokens: Tensor  # [n, k] nearest distinct real tokens by cosine, best first
    neighbor_cos: Tensor  # [n, k]


def _percentile_of(values: Tensor, ordered: Tensor) -> Tensor:
    """% of the ascending ``ordered`` strictly below each of ``values``.  [n], [n_ref] -> [n]."""
    return 100.0 * torch.searchsorted(ordered, values.contiguous(), right=False).float() / len(ordered)


def _rms_z(vectors: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Root-mean-square per-dimension z-score.  [n, d_model], [d_model], [d_model] -> [n]."""
    return (((vectors - mean) / std) ** 2).mean(1).sqrt()


def describe_vectors(vectors: Tensor, space: VectorSpace, *, k: int = 5, device: str = "cpu") -> VectorDescription:
    """Norm, centroid distance and cosine, RMS z-score (each with its percentile among the reference
    vectors) and the ``k`` nearest distinct real tokens of vectors [n, d_model]; the cosines against
    every reference vector are computed on ``device``."""
    v = vectors.float().cpu()
    norm, dist, z = v.norm(dim=1), (v - space.centroid).norm(dim=1), _rms_z(v, space.centroid, space.std)
    cos = torch.nn.functional.normalize(v, dim=1).to(device) @ space.unit_vectors.to(device).T  # [n, n_ref]
    # Residual spaces hold several rows per token (one per prompt): keep each token's best row.
    distinct, row_token = space.distinct_tokens
    per_token = torch.full((len(v), len(distinct)), -2.0, device=device).scatter_reduce(
        1, row_token.to(device).expand(len(v), -1), cos, reduce="amax"
    )
    top = per_token.topk(min(k, len(distinct)), dim=1)
    return VectorDescription(
        norm=norm,
        norm_pct=_percentile_of(norm, space.sorted_norms),
        centroid_dist=dist,
        centroid_dist_pct=_percentile_of(dist, space.sorted_centroid_dists),
        centroid_cos=torch.nn.functional.cosine_similarity(v, space.centroid[None], dim=1),
        rms_z=z,
        rms_z_pct=_percentile_of(z, space.sorted_rms_z),
        neighbor_tokens=distinct[top.indices.cpu()],
        neighbor_cos=top.values.cpu(),
    )


def vector_bytes(vector: Tensor) -> bytes:
    """float32 little-endian bytes of a [d_model] vector, as stored in ``noken.vector``."""
    return vector.detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes()


def vector_from_bytes(data: bytes) -> Tensor:
    """Inverse of :func:`vector_bytes`: [d_model] float32."""
    return torch.frombuffer(bytearray(data), dtype=torch.float32)
