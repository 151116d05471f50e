"""Every stage, by name. ``tokenizer_facts`` registers the model (tokenizer, token facts, model row)
before any other stage runs; the others implement :class:`ingest.stages.base.Stage`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catalog.database import CatalogError
from ingest.stages.base import Stage, upstream_stages
from ingest.stages.embedding_stats import EMBEDDING_STATS
from ingest.stages.evaluation import EVALUATION
from ingest.stages.nokens import NOKENS
from ingest.stages.probes import PROBES
from ingest.stages.prompts import PROMPTS

TOKENIZER_FACTS = "tokenizer_facts"
STAGES: dict[str, Stage] = {stage.name: stage for stage in (EMBEDDING_STATS, PROBES, PROMPTS, NOKENS, EVALUATION)}
STAGE_NAMES = (TOKENIZER_FACTS, *STAGES)


def stage_named(name: str) -> Stage:
    if name not in STAGES:
        raise CatalogError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")
    return STAGES[name]


def in_dependency_order(params: Mapping[str, Any]) -> list[str]:
    """The stage names of ``params`` (name -> that stage's params) in catalogue order, except that each
    comes after the stages it depends on."""
    needs = {name: {dep for dep in upstream_stages(STAGES[name], value) if dep in params} for name, value in params.items()}
    order: list[str] = []
    while len(order) < len(needs):
        ready = [name for name in STAGES if name in needs and name not in order and needs[name] <= set(order)]
        if not ready:
            raise CatalogError(f"stage dependencies form a cycle among {', '.join(sorted(set(needs) - set(order)))}")
        order.append(ready[0])
    return order
