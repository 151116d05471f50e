"""Noken generators and vector descriptions: deterministic under a seed, and each builds what it promises."""

import pytest
import torch

from catalog.database import CatalogError
from ingest.compute.nokens import (
    GENERATORS,
    GeneratorParams,
    VectorSpace,
    describe_vectors,
    generate,
    generator_seed,
    vector_bytes,
    vector_from_bytes,
)

PARAMS = GeneratorParams()


@pytest.fixture(scope="module")
def space() -> VectorSpace:
    """A small space: 200 'normal' vectors around an offset, 20 'anomalous' ones pulled to the centroid."""
    rng = torch.Generator().manual_seed(0)
    offset = torch.randn(16, generator=rng)
    normal = offset + torch.randn(200, 16, generator=rng)
    anomalous = offset + 0.1 * torch.randn(20, 16, generator=rng)
    vectors = torch.cat([normal, anomalous])
    return VectorSpace(vectors, torch.arange(220) + 1000, torch.arange(200, 220), torch.arange(0, 200, 4))


def _vectors(batches):
    return torch.cat([b.draw.vectors for b in batches])


def test_same_seed_same_vectors_other_seed_other_vectors(space):
    names = tuple(GENERATORS)
    first, again, other = (generate(space, names, PARAMS, seed) for seed in (7, 7, 8))
    assert torch.equal(_vectors(first), _vectors(again))
    random_ones = [n for n in names if n != "centroid"]
    assert all(
        not torch.equal(a.draw.vectors, b.draw.vectors) for a, b in zip(first, other) if a.name in random_ones
    )


def test_a_generator_draws_the_same_vectors_whichever_others_run(space):
    alone = generate(space, ("interpolation",), PARAMS, 3)[0]
    among = next(b for b in generate(space, tuple(GENERATORS), PARAMS, 3) if b.name == "interpolation")
    assert alone.seed == among.seed == generator_seed(3, "interpolation")
    assert torch.equal(alone.draw.vectors, among.draw.vectors)
    assert among.start > 0 and alone.start == 0


def test_indices_number_every_vector_once(space):
    batches = generate(space, tuple(GENERATORS), PARAMS, 0)
    indices = [i for b in batches for i in b.indices]
    assert indices == list(range(len(_vectors(batches))))


def test_gaussian_and_direction_sweep_sit_at_the_typical_norm_and_its_multiples(space):
    gaussian, sweep = generate(space, ("gaussian_typical", "direction_sweep"), PARAMS, 0)
    typical = space.typical_norm
    assert torch.allclose(gaussian.draw.vectors.norm(dim=1), torch.full((PARAMS.n_random,), typical), rtol=1e-5)
    expected = torch.tensor(PARAMS.norm_multiples).repeat(PARAMS.n_directions) * typical
    assert torch.allclose(sweep.draw.vectors.norm(dim=1), expected, rtol=1e-5)


def test_anomalous_shell_matches_the_picked_tokens_norm_and_centroid_distance(space):
    shell = generate(space, ("anomalous_shell",), PARAMS, 0)[0].draw
    picked = space.vectors[shell.source_rows]
    assert set(shell.source_rows.tolist()) <= set(space.anomalous.tolist())
    assert torch.allclose((shell.vectors - space.centroid).norm(dim=1), (picked - space.centroid).norm(dim=1), rtol=1e-4)
    assert torch.allclose(shell.vectors.norm(dim=1), picked.norm(dim=1), rtol=1e-4)
    assert not torch.allclose(shell.vectors, picked)  # a new direction, not a copy


def test_interpolation_ends_are_the_real_tokens_and_scaled_copies_keep_direction(space):
    interp, scaled = (b.draw for b in generate(space, ("interpolation", "scaled_token"), PARAMS, 0))
    alphas = [d["alpha"] for d in interp.details]
    at_zero, at_one = alphas.index(0.0), alphas.index(1.0)
    assert torch.equal(interp.vectors[at_zero], space.vectors[interp.source_rows[at_zero]])
    assert torch.allclose(interp.vectors[at_one], space.vectors[interp.source2_rows[at_one]])
    scales = torch.tensor([d["scale"] for d in scaled.details])
    assert torch.allclose(scaled.vectors, space.vectors[scaled.source_rows] * scales[:, None])


def test_centroid_is_the_mean(space):
    assert torch.allclose(generate(space, ("centroid",), PARAMS, 0)[0].draw.vectors[0], space.vectors.mean(0))


def test_description_of_real_vectors_finds_themselves_and_ranks_outliers_high(space):
    described = describe_vectors(space.vectors[:3], space, k=4)
    assert described.neighbor_tokens[:, 0].tolist() == space.token_ids[:3].tolist()
    assert torch.allclose(described.neighbor_cos[:, 0], torch.ones(3))
    far = describe_vectors(space.vectors[:1] * 50, space)
    assert far.norm_pct.item() == 100.0 and far.rms_z_pct.item() == 100.0
    near = describe_vectors(space.centroid[None], space)
    assert near.centroid_dist_pct.item() == 0.0 and near.centroid_dist.item() == pytest.approx(0.0, abs=1e-5)


def test_description_keeps_each_tokens_best_row_when_a_token_has_several():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0]])
    shared = VectorSpace(vectors, torch.tensor([5, 5, 6, 7]), torch.tensor([3]), torch.tensor([0, 1, 2]))
    described = describe_vectors(torch.tensor([[0.0, 1.0]]), shared, k=3)
    assert described.neighbor_tokens[0].tolist() == [5, 6, 7]
    assert described.neighbor_cos[0, 0].item() == pytest.approx(1.0)


def test_vectors_survive_the_byte_round_trip(space):
    vector = space.vectors[7]
    assert torch.equal(vector_from_bytes(vector_bytes(vector)), vector)
    assert len(vector_bytes(vector)) == 4 * vector.shape[0]


def test_bad_generator_settings_are_one_line_errors(space):
    with pytest.raises(CatalogError, match="unknown noken generator"):
        generate(space, ("nope",), PARAMS, 0)
    with pytest.raises(CatalogError, match="scales must be positive"):
        generate(space, ("scaled_token",), GeneratorParams(scales=(0.0, 1.0)), 0)
    empty = VectorSpace(space.vectors, space.token_ids, torch.tensor([], dtype=torch.long), space.normal)
    with pytest.raises(CatalogError, match="no rows in a group"):
        generate(empty, ("interpolation",), PARAMS, 0)
