"""The catalog's tables (SQLAlchemy 2 typed ORM).

Every table is documented column by column through ``comment=``: the SQL
reference in ``docs/schema.md`` is generated from these comments and a test
fails when the two drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class NulFreeText(TypeDecorator[str]):
    """Text stored with NUL shown as U+2400 '␀' on every backend: PostgreSQL text cannot hold NUL (raw_bytes keeps the exact bytes)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else value.replace("\x00", "\u2400")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class Tokenizer(Base):
    __tablename__ = "tokenizer"
    __table_args__ = {"comment": "A vocabulary, shared by every model that uses the same one."}

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    content_hash: Mapped[str] = mapped_column(
        String(64), unique=True, comment="sha256 over (id, bytes, special) of every token: equal vocabularies share one row."
    )
    name: Mapped[str] = mapped_column(String(200), comment="Name of the first model or encoding it was ingested from.")
    kind: Mapped[str] = mapped_column(
        String(40), comment="Piece encoding: byte_level (GPT-2 style BPE), sentencepiece, wordpiece or tiktoken."
    )
    vocab_size: Mapped[int] = mapped_column(
        comment="Number of token ids (holes in the id range and padding rows [PADn] excluded); padding rows follow the last id."
    )
    n_special: Mapped[int] = mapped_column(comment="Number of special / control tokens.")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, comment="When first ingested (UTC).")

    tokens: Mapped[list[Token]] = relationship(back_populates="tokenizer", cascade="all, delete-orphan", passive_deletes=True)
    models: Mapped[list[Model]] = relationship(back_populates="tokenizer")


class Token(Base):
    __tablename__ = "token"
    __table_args__ = (
        # Covers the cross-tokenizer joins on the normalised string (which tokenizers have it) without reading rows.
        Index("ix_token_norm_key_tokenizer", "norm_key", "tokenizer_id"),
        # Tokens per category of each tokenizer (overview, the model page's category filter) without reading rows.
        Index("ix_token_tokenizer_category", "tokenizer_id", "category"),
        {
            "comment": "One row per token id of a tokenizer, with its tokenizer facts, then one per padding row: an embedding "
            "row beyond the tokenizer's ids (a model padded to a multiple of 64 or 128), piece '[PADn]' with n its id, "
            "category placeholder, no bytes, empty text; the most padded model of the tokenizer decides how many."
        },
    )

    tokenizer_id: Mapped[int] = mapped_column(
        ForeignKey("tokenizer.id", ondelete="CASCADE"), primary_key=True, comment="Tokenizer the token belongs to."
    )
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="The token's id in its vocabulary.")
    piece: Mapped[str] = mapped_column(NulFreeText, comment="Raw vocabulary entry as the tokenizer stores it (e.g. 'Ġthe', '▁the', '##s').")
    text: Mapped[str] = mapped_column(NulFreeText, comment="Decoded text; undecodable bytes shown as U+FFFD.")
    raw_bytes: Mapped[bytes | None] = mapped_column(
        LargeBinary, comment="Exact bytes the token stands for; NULL for special tokens and padding rows."
    )
    norm_key: Mapped[str | None] = mapped_column(
        NulFreeText, comment="NFKC text with surrounding whitespace stripped: joins the same string across tokenizers; NULL if undecodable or empty."
    )
    is_special: Mapped[bool] = mapped_column(Boolean, comment="Special / control / added special token.")
    is_byte: Mapped[bool] = mapped_column(Boolean, comment="Stands for one raw byte (byte-fallback '<0xNN>' or a single-byte BPE token).")
    is_partial_utf8: Mapped[bool] = mapped_column(Boolean, comment="Its bytes are not valid UTF-8 on their own (a fragment of a character).")
    is_unreachable: Mapped[bool] = mapped_column(
        Boolean, comment="Encoding the decoded text does not give this token back (special and partial-UTF-8 tokens excluded)."
    )
    unreachable_kind: Mapped[str | None] = mapped_column(
        String(10), comment="'single' (re-encodes to one other token), 'multi' (to several) or 'empty'; NULL if reachable."
    )
    reencoded_ids: Mapped[str | None] = mapped_column(Text, comment="Space-separated ids the decoded text re-encodes to, when unreachable.")
    is_whitespace: Mapped[bool] = mapped_column(Boolean, comment="Decoded text is non-empty and only whitespace.")
    n_bytes: Mapped[int] = mapped_column(comment="Length in bytes.")
    n_chars: Mapped[int] = mapped_column(comment="Length in characters of the decoded text.")
    script: Mapped[str] = mapped_column(
        String(20), comment="Dominant Unicode script of its letters (Latin, Cyrillic, Han, ...), 'Common' if none, 'Mixed' if several."
    )
    category: Mapped[str] = mapped_column(
        String(20), comment="First matching of: placeholder (<unusedN>, [unusedN], reserved specials, [PADn] padding rows: the unused-token reference, never counted as findings), special, partial_utf8, byte, unreachable, whitespace, normal."
    )

    tokenizer: Mapped[Tokenizer] = relationship(back_populates="tokens")


class SharedStrings(Base):
    __tablename__ = "shared_strings"
    __table_args__ = {
        "comment": "For every pair of tokenizers, how many distinct norm_key strings are a token in both; written when a "
        "tokenizer is catalogued (its tokens never change afterwards), so the comparison needs no scan of token."
    }

    tokenizer_a_id: Mapped[int] = mapped_column(
        ForeignKey("tokenizer.id", ondelete="CASCADE"), primary_key=True, comment="The pair's tokenizer with the lower id."
    )
    tokenizer_b_id: Mapped[int] = mapped_column(
        ForeignKey("tokenizer.id", ondelete="CASCADE"), primary_key=True, comment="The pair's tokenizer with the higher id."
    )
    n_strings: Mapped[int] = mapped_column(comment="Distinct normalised strings (token.norm_key) that are a token of both.")


class Model(Base):
    __tablename__ = "model"
    __table_args__ = (
        UniqueConstraint("name", "revision"),
        {"comment": "A model (or a tokenizer-only encoding) as ingested from one source at one revision."},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    name: Mapped[str] = mapped_column(String(200), comment="Short name, e.g. 'SmolLM2-135M-Instruct.Q4_1'.")
    spec: Mapped[str] = mapped_column(Text, comment="The spec given to `glitchdex ingest`.")
    source_kind: Mapped[str] = mapped_column(
        String(20), comment="hub, directory, gguf, package, tiktoken or tokenizer_file (tokenizer.json, encoder.json + vocab.bpe, NAME.tiktoken)."
    )
    source: Mapped[str] = mapped_column(Text, comment="Resolved location: hub id, folder or file path.")
    revision: Mapped[str] = mapped_column(String(64), comment="Hub commit, or sha256 of the weight files.")
    architecture: Mapped[str | None] = mapped_column(String(100), comment="transformers model_type (llama, gemma3_text, bert, ...); NULL for tokenizer-only.")
    vocab_size: Mapped[int] = mapped_column(comment="Rows of the input-embedding matrix (tokenizer size for tokenizer-only).")
    hidden_size: Mapped[int | None] = mapped_column(comment="Embedding width d_model.")
    tied_embeddings: Mapped[bool | None] = mapped_column(Boolean, comment="Unembedding is the input embedding; NULL if the model has no LM head.")
    n_params: Mapped[int | None] = mapped_column(BigInteger, comment="Number of parameters.")
    tokenizer_id: Mapped[int] = mapped_column(ForeignKey("tokenizer.id"), comment="Its tokenizer.")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, comment="When first ingested (UTC).")

    tokenizer: Mapped[Tokenizer] = relationship(back_populates="models")
    runs: Mapped[list[IngestRun]] = relationship(back_populates="model")


class IngestRun(Base):
    __tablename__ = "ingest_run"
    __table_args__ = (
        Index("ix_ingest_run_lookup", "model_id", "stage", "params_hash", "code_version"),
        {"comment": "One execution of one stage for one model; rows of other tables point at the run that wrote them."},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model the stage ran for.")
    stage: Mapped[str] = mapped_column(String(40), comment="tokenizer_facts, embedding_stats, probes, prompt_search, nokens, evaluation or embedding_fix.")
    params: Mapped[dict[str, Any]] = mapped_column(comment="Parameters as JSON (seeds, k, thresholds, reference-token rule, ...).")
    params_hash: Mapped[str] = mapped_column(String(64), comment="sha256 of the canonical JSON params: a stage is skipped when a succeeded run has the same hash.")
    code_version: Mapped[str] = mapped_column(String(40), comment="glitchdex version that ran it.")
    status: Mapped[str] = mapped_column(
        String(12),
        comment=(
            "running, succeeded or failed. Read rows of succeeded runs only: resumable stages (probes, prompt_search, nokens) "
            "keep an unfinished run's rows for the next attempt."
        ),
    )
    error: Mapped[str | None] = mapped_column(Text, comment="One-line error of a failed run.")
    device: Mapped[str | None] = mapped_column(String(40), comment="torch device the stage computed on.")
    n_rows: Mapped[int | None] = mapped_column(comment="Rows written by the run.")
    seconds: Mapped[float | None] = mapped_column(Float, comment="Wall time of the stage.")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, comment="Start (UTC).")
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), comment="End (UTC); NULL while running.")

    model: Mapped[Model] = relationship(back_populates="runs")


class EmbeddingStat(Base):
    __tablename__ = "embedding_stat"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        Index("ix_embedding_stat_run_rank", "run_id", "anomaly_rank"),
        {"comment": "Embedding indicators of every token of a model, per embedding_stats run. Percentiles: 1.0 = most anomalous."},
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The embedding_stats run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Token id.")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    embed_norm: Mapped[float] = mapped_column(Float, comment="L2 norm of the input embedding.")
    unembed_norm: Mapped[float | None] = mapped_column(Float, comment="L2 norm of the unembedding row; NULL if tied or no LM head.")
    centroid_dist: Mapped[float] = mapped_column(Float, comment="L2 distance of the input embedding to the mean embedding.")
    centroid_cos: Mapped[float] = mapped_column(Float, comment="Cosine similarity of the input embedding to the mean embedding.")
    unused_cos: Mapped[float] = mapped_column(
        Float,
        comment="Cosine similarity of the unembedding (input embedding for encoders), first principal component removed, to the mean of reference unused tokens (rule in the run's params); high = under-trained.",
    )
    cluster_id: Mapped[int] = mapped_column(comment="k-means cluster of the input embedding (reference seed).")
    cluster_stability: Mapped[float] = mapped_column(
        Float, comment="Fraction of k-means seeds whose (label-matched) cluster agrees with the reference seed."
    )
    embed_norm_pct: Mapped[float] = mapped_column(Float, comment="Percentile of a low norm (1.0 = smallest norm).")
    centroid_dist_pct: Mapped[float] = mapped_column(Float, comment="Percentile of closeness to the centroid (1.0 = nearest).")
    unused_cos_pct: Mapped[float] = mapped_column(Float, comment="Percentile of unused_cos (1.0 = most similar to unused tokens).")
    anomaly_score: Mapped[float] = mapped_column(Float, comment="The ranking used by `glitchdex top`; currently unused_cos_pct, the strongest published indicator.")
    anomaly_rank: Mapped[int] = mapped_column(comment="1 = most anomalous token of the model in this run.")


class Cluster(Base):
    __tablename__ = "cluster"
    __table_args__ = {"comment": "k-means clusters of a model's input embeddings (reference seed), per embedding_stats run."}

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The embedding_stats run.")
    cluster_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Cluster label.")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model.")
    size: Mapped[int] = mapped_column(comment="Number of tokens in the cluster.")
    centroid_norm: Mapped[float] = mapped_column(Float, comment="L2 norm of the cluster centre.")
    dist_to_global_centroid: Mapped[float] = mapped_column(Float, comment="L2 distance of the cluster centre to the mean embedding.")
    mean_stability: Mapped[float] = mapped_column(Float, comment="Mean cluster_stability of its tokens.")


class Neighbor(Base):
    __tablename__ = "neighbor"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "neighbor_token_id"], ["token.tokenizer_id", "token.token_id"]),
        {"comment": "Nearest input-embedding neighbours (cosine) of a model's most anomalous tokens, per embedding_stats run."},
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The embedding_stats run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Token whose neighbours these are.")
    rank: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="1 = nearest.")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    neighbor_token_id: Mapped[int] = mapped_column(comment="The neighbouring token's id.")
    cosine: Mapped[float] = mapped_column(Float, comment="Cosine similarity of the two input embeddings.")


class EmbeddingProjection(Base):
    __tablename__ = "embedding_projection"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        {
            "comment": "2-D map of a model's input embeddings, per embedding_stats run: PCA of every token, and t-SNE fitted on a sample "
            "(the top of every indicator plus an even stride; sizes in the run's params) with every other token placed by its nearest fitted tokens."
        },
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The embedding_stats run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Token id.")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    pca_x: Mapped[float] = mapped_column(Float, comment="Score on the first principal axis of the centred input embeddings.")
    pca_y: Mapped[float] = mapped_column(Float, comment="Score on the second principal axis.")
    tsne_x: Mapped[float] = mapped_column(Float, comment="t-SNE map position, first coordinate (of the 50-axis PCA scores; cosine-nearest fitted tokens' mean when not fitted).")
    tsne_y: Mapped[float] = mapped_column(Float, comment="t-SNE map position, second coordinate.")
    tsne_fitted: Mapped[bool] = mapped_column(
        Boolean, comment="The token was in the t-SNE sample (true for the top of every indicator); false: placed at the mean position of its 5 nearest fitted tokens."
    )


# --- behavioural probes (stage "probes") ---------------------------------------------


class ProbeTemplate(Base):
    __tablename__ = "probe_template"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        {"comment": "A versioned probe prompt; the probed token is inserted by id where the text says «TOKEN»."},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    name: Mapped[str] = mapped_column(String(60), comment="Template name, e.g. 'echo_fewshot'.")
    version: Mapped[int] = mapped_column(comment="Bumped whenever text, prefix or generation length change; old versions stay for old runs.")
    kind: Mapped[str] = mapped_column(
        String(20), comment="repeat, meaning, continue (the token itself should come back) or spell (its letters should)."
    )
    chat: Mapped[bool] = mapped_column(
        Boolean, comment="Rendered as a user turn with the model's chat template (plain 'Question:/Answer:' text without one)."
    )
    text: Mapped[str] = mapped_column(Text, comment="Prompt (user message when chat) with one or more «TOKEN» placeholders.")
    response_prefix: Mapped[str] = mapped_column(Text, comment="Text the answer is primed with, appended after the rendered prompt.")
    max_new_tokens: Mapped[int] = mapped_column(comment="Greedy tokens generated in candidate mode (sweeps generate only the scored positions).")
    description: Mapped[str] = mapped_column(Text, comment="What the probe tests.")


class ProbeResult(Base):
    __tablename__ = "probe_result"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        {"comment": "One probe of one token of a model, per probes run: greedy output and the target token's probability."},
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The probes run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Probed token (inserted by id).")
    template_id: Mapped[int] = mapped_column(ForeignKey("probe_template.id"), primary_key=True, comment="Probe template (name + version).")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    output: Mapped[str] = mapped_column(Text, comment="Greedy output, decoded, special tokens kept, cut after the end-of-turn token.")
    output_ids: Mapped[str] = mapped_column(Text, comment="Space-separated ids of the greedy output.")
    target_prob: Mapped[float] = mapped_column(Float, comment="Highest probability of the target token over the scored positions.")
    target_rank: Mapped[int] = mapped_column(comment="Best rank of the target token over the scored positions (1 = greedy choice).")
    position_probs: Mapped[list[float]] = mapped_column(
        JSON, comment="Target probability at each of the first generated positions (teacher-forced on the greedy output)."
    )
    position_ranks: Mapped[list[int]] = mapped_column(JSON, comment="Target rank at each of those positions.")
    passed: Mapped[bool] = mapped_column(
        Boolean, comment="repeat/meaning/continue: the target was generated within the scored positions; spell: the output spells the token."
    )
    failure_category: Mapped[str | None] = mapped_column(
        String(20),
        comment="For failed probes, from the output: empty, evasion, question_repeat, spelling_out, random_chars, substitution or hallucination.",
    )


class TokenVerdict(Base):
    __tablename__ = "token_verdict"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        Index("ix_token_verdict_run_verdict", "run_id", "verdict"),
        {"comment": "Verdict on each selected token of a model, per probes run; thresholds are in the run's params."},
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The probes run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Token id.")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    selected_by: Mapped[str] = mapped_column(
        String(120), comment="Why it was probed: comma-separated indicators whose top N it is in, 'control' or 'sweep'."
    )
    verdict: Mapped[str] = mapped_column(
        String(20),
        comment="verified (target probability below params.thresholds.verified_below in every target probe), weakly_verified (below weak_below), rejected, or untested (special tokens).",
    )
    max_target_prob: Mapped[float | None] = mapped_column(Float, comment="Highest target probability over its target probes; NULL if untested.")
    n_probes: Mapped[int] = mapped_column(comment="Probes run on the token.")
    n_passed: Mapped[int] = mapped_column(comment="Probes it passed.")
    failure_category: Mapped[str | None] = mapped_column(
        String(20), comment="Most frequent failure category of its failed probes (ties: the order listed in probe_result); NULL if none failed."
    )


class IndicatorPrecision(Base):
    __tablename__ = "indicator_precision"
    __table_args__ = {"comment": "How many of each indicator's top-N candidates (and of the random control sample) the probes verified, per probes run."}

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The probes run.")
    indicator: Mapped[str] = mapped_column(
        String(30), primary_key=True, comment="anomaly_score, unused_cos, centroid_dist, embed_norm, or control (random normal tokens)."
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model.")
    n_selected: Mapped[int] = mapped_column(comment="Tokens in its top N (or in the control sample).")
    n_tested: Mapped[int] = mapped_column(comment="Of those, tokens probed (special tokens are not).")
    n_verified: Mapped[int] = mapped_column(comment="Of those, verdict verified.")
    n_weakly_verified: Mapped[int] = mapped_column(comment="Of those, verdict weakly_verified.")
    precision: Mapped[float | None] = mapped_column(Float, comment="n_verified / n_tested; NULL if nothing was tested.")
    precision_weak: Mapped[float | None] = mapped_column(Float, comment="(n_verified + n_weakly_verified) / n_tested.")


class ProbeDeterminism(Base):
    __tablename__ = "probe_determinism"
    __table_args__ = {"comment": "Re-runs of a sample of probes in other batch compositions: did the greedy output change?"}

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The probes run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Token id.")
    template_id: Mapped[int] = mapped_column(ForeignKey("probe_template.id"), primary_key=True, comment="Probe template.")
    trial: Mapped[str] = mapped_column(
        String(20), primary_key=True, comment="'alone' (batch of one, no padding) or 'reshuffled' (the sample in reverse order as one batch)."
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model.")
    batch_size: Mapped[int] = mapped_column(comment="Batch size of the re-run.")
    output_ids: Mapped[str] = mapped_column(Text, comment="Space-separated ids of the re-run's greedy output.")
    changed: Mapped[bool] = mapped_column(Boolean, comment="The greedy output differs from the one stored in probe_result.")

class PromptSearch(Base):
    __tablename__ = "prompt_search"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        {
            "comment": "Best prompt found for making a model output a target token next, per prompt_search run, target and method. "
            "Hyperparameters are in the run's params; rows appear per finished target, so read only succeeded runs."
        },
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The prompt_search run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Target token id.")
    method: Mapped[str] = mapped_column(
        String(12),
        primary_key=True,
        comment="'gcg' (discrete gradient-guided token swaps) or 'continuous' (embeddings optimised through their projection to the nearest allowed tokens).",
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    target_role: Mapped[str] = mapped_column(
        String(12), comment="Why the token was searched: 'anomalous' (top by anomaly_score), 'verified' (verified by the latest probes run), 'control' (random normal token) or 'requested'."
    )
    prompt_ids: Mapped[str] = mapped_column(
        Text, comment="Space-separated ids of the best prompt: the optimised slot between the run's params.prefix_ids and params.suffix_ids."
    )
    prompt_text: Mapped[str] = mapped_column(Text, comment="The best prompt decoded to text.")
    target_logprob: Mapped[float] = mapped_column(Float, comment="Log-probability of the target as the next token after the prompt.")
    target_rank: Mapped[int] = mapped_column(comment="Rank of the target among next tokens; 1 = greedy next token.")
    margin: Mapped[float] = mapped_column(Float, comment="Target logit minus the highest other logit; > 0 iff the target is the greedy next token.")
    relaxed_logprob: Mapped[float | None] = mapped_column(
        Float, comment="Continuous method: target log-prob from the final soft (unprojected) embeddings, an optimistic bound; NULL for gcg."
    )
    greedy_emits: Mapped[bool] = mapped_column(Boolean, comment="Greedy decoding from the prompt ids (through the model's input_ids path) emits the target first.")
    reencodes: Mapped[bool] = mapped_column(Boolean, comment="Decoding the prompt to text and encoding it again gives back the same ids.")
    prompt_contains_target: Mapped[bool] = mapped_column(
        Boolean, comment="The decoded prompt contains the target's (stripped) text, spelt with other tokens."
    )
    anomalous_allowed: Mapped[bool] = mapped_column(
        Boolean, comment="The catalog's most anomalous tokens (count in the run's params) were allowed in the prompt."
    )
    n_banned: Mapped[int] = mapped_column(comment="Token ids banned from this target's prompt (target, tokens containing its text, specials, ...).")
    steps: Mapped[int] = mapped_column(comment="Optimisation steps spent (gcg: all restarts together; it stops at the first success).")
    budget_steps: Mapped[int | None] = mapped_column(
        comment="Step budget the method had for this target (gcg: params.search.max_steps; continuous: continuous_steps); "
        "not greedy_emits and budget_steps >= B: not elicited within budget B. NULL for rows older than migration 0010."
    )
    restarts: Mapped[int | None] = mapped_column(
        comment="gcg: restarts from random tokens after params.search.patience steps without progress; 0 for continuous. NULL before migration 0010."
    )
    n_evaluations: Mapped[int] = mapped_column(comment="Prompts scored by a forward pass (candidates and gradient passes).")
    seconds: Mapped[float] = mapped_column(Float, comment="Wall time the target spent in its batch (shared with the batch's other targets).")
    device: Mapped[str] = mapped_column(String(40), comment="torch device the search ran on.")
    seed: Mapped[int] = mapped_column(BigInteger, comment="Seed of this target's random draws (from the run's seed and the token id).")
    loss_trajectory: Mapped[list[float] | None] = mapped_column(
        JSON, comment="Loss after every step, if kept (JSON array): gcg, minus the best params.search.objective so far (margin or log-prob); continuous, the cross-entropy of the step's projected prompt."
    )
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, comment="When this target's search finished (UTC).")


class Noken(Base):
    __tablename__ = "noken"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "nearest_token_id"], ["token.tokenizer_id", "token.token_id"]),
        Index("ix_noken_run_generator", "run_id", "generator"),
        {
            "comment": "A synthetic vector ('noken') put where a token would be, per nokens run: how it was made, "
            "where it sits relative to real tokens, and the verdict of probing it. Probes score its nearest real token as the target."
        },
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The nokens run.")
    noken_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Index of the noken within its run (0, 1, ...).")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    space: Mapped[str] = mapped_column(
        String(10),
        comment="'input': the vector replaces the token's embedding (in embedding-matrix units); "
        "'residual': it is placed in the residual stream entering decoder layer `layer`.",
    )
    layer: Mapped[int | None] = mapped_column(comment="Decoder layer whose input holds the vector (0 = first layer); NULL for space 'input'.")
    mode: Mapped[str] = mapped_column(
        String(10), comment="'replace': the vector takes the slot token's place; 'add': it is added to the slot token's activation (residual only)."
    )
    generator: Mapped[str] = mapped_column(
        String(30),
        comment="gaussian_typical, anomalous_shell, centroid, interpolation, scaled_token or direction_sweep (docs/nokens.md).",
    )
    generator_seed: Mapped[int] = mapped_column(
        BigInteger, comment="Seed of the generator's CPU torch.Generator (from the run's seed and the generator name): regenerates the vector."
    )
    details: Mapped[dict[str, Any]] = mapped_column(
        comment="Generator settings of this vector: alpha, scale, norm_multiple, matched_norm, ... (JSON object)."
    )
    source_token_id: Mapped[int | None] = mapped_column(
        comment="Real token the vector derives from (scaled_token's token, interpolation's normal end, anomalous_shell's matched token)."
    )
    source2_token_id: Mapped[int | None] = mapped_column(comment="interpolation's anomalous end; NULL otherwise.")
    vector: Mapped[bytes] = mapped_column(LargeBinary, comment="The vector: d_model float32 values, little-endian.")
    d_model: Mapped[int] = mapped_column(comment="Length of the vector.")
    norm: Mapped[float] = mapped_column(Float, comment="L2 norm.")
    norm_pct: Mapped[float] = mapped_column(Float, comment="% of the space's reference vectors with a smaller norm.")
    centroid_dist: Mapped[float] = mapped_column(Float, comment="L2 distance to the mean of the reference vectors.")
    centroid_dist_pct: Mapped[float] = mapped_column(Float, comment="% of reference vectors nearer the mean.")
    centroid_cos: Mapped[float] = mapped_column(Float, comment="Cosine with the mean of the reference vectors.")
    rms_z: Mapped[float] = mapped_column(
        Float, comment="Out-of-distribution measure: root-mean-square over dimensions of (value - reference mean) / reference std."
    )
    rms_z_pct: Mapped[float] = mapped_column(Float, comment="% of reference vectors with a smaller rms_z; 100 = beyond every real one.")
    nearest_token_id: Mapped[int] = mapped_column(comment="Real token of highest cosine (a tie goes to the token the vector was made from): the probes' target and the slot's carrier token.")
    nearest_cos: Mapped[float] = mapped_column(Float, comment="Its cosine.")
    verdict: Mapped[str] = mapped_column(
        String(20), comment="As token_verdict.verdict, from this noken's probes with the run's thresholds: verified, weakly_verified or rejected."
    )
    max_target_prob: Mapped[float | None] = mapped_column(Float, comment="Highest probability of the target over its target probes.")
    n_probes: Mapped[int] = mapped_column(comment="Probes run on the noken.")
    n_passed: Mapped[int] = mapped_column(comment="Probes it passed.")
    failure_category: Mapped[str | None] = mapped_column(String(20), comment="Most frequent failure category of its failed probes.")


class NokenNeighbor(Base):
    __tablename__ = "noken_neighbor"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "noken_id"], ["noken.run_id", "noken.noken_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        {"comment": "Nearest real tokens of each noken by cosine in its space (residual: a token's best prompt)."},
    )

    run_id: Mapped[int] = mapped_column(primary_key=True, comment="The nokens run.")
    noken_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="The noken.")
    rank: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="1 = nearest.")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (for joins with token).")
    token_id: Mapped[int] = mapped_column(comment="Real token id.")
    cosine: Mapped[float] = mapped_column(Float, comment="Cosine between the noken and the token's reference vector.")


class NokenProbeResult(Base):
    __tablename__ = "noken_probe_result"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "noken_id"], ["noken.run_id", "noken.noken_id"], ondelete="CASCADE"),
        {
            "comment": "One probe of one noken, per nokens run: the fields of probe_result for the noken's target (nearest real token), "
            "and how the output differs from the same probe of that real token (the baseline)."
        },
    )

    run_id: Mapped[int] = mapped_column(primary_key=True, comment="The nokens run.")
    noken_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="The noken.")
    template_id: Mapped[int] = mapped_column(ForeignKey("probe_template.id"), primary_key=True, comment="Probe template (name + version).")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    target_token_id: Mapped[int] = mapped_column(comment="The scored target: the noken's nearest real token.")
    output: Mapped[str] = mapped_column(Text, comment="Greedy output, decoded, special tokens kept, cut after the end-of-turn token.")
    output_ids: Mapped[str] = mapped_column(Text, comment="Space-separated ids of the greedy output.")
    target_prob: Mapped[float] = mapped_column(Float, comment="Highest probability of the target over the scored positions.")
    target_rank: Mapped[int] = mapped_column(comment="Best rank of the target over the scored positions (1 = greedy choice).")
    position_probs: Mapped[list[float]] = mapped_column(JSON, comment="Target probability at each of the first generated positions.")
    position_ranks: Mapped[list[int]] = mapped_column(JSON, comment="Target rank at each of those positions.")
    passed: Mapped[bool] = mapped_column(Boolean, comment="As probe_result.passed, for the target.")
    failure_category: Mapped[str | None] = mapped_column(String(20), comment="As probe_result.failure_category.")
    baseline_output: Mapped[str] = mapped_column(Text, comment="Greedy output of the same probe with the target token itself in the slots (decoded as output).")
    baseline_output_ids: Mapped[str] = mapped_column(Text, comment="Space-separated ids of that baseline output.")
    output_changed: Mapped[bool] = mapped_column(Boolean, comment="The greedy output differs from the baseline's.")
    kl_from_baseline: Mapped[float] = mapped_column(
        Float, comment="KL(baseline || noken) in nats between the next-token distributions at the first generated position."
    )


class EmbeddingFix(Base):
    __tablename__ = "embedding_fix"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        {
            "comment": "Rows of a model copy written by `glitchdex check --fix`, set to the mean of trained rows, per embedding_fix run "
            "(the run's params: output folder, which tokens, how many trained rows were averaged)."
        },
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The embedding_fix run.")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Token whose row was changed.")
    matrix: Mapped[str] = mapped_column(
        String(10), primary_key=True, comment="'input' (the input embedding; also the unembedding when tied) or 'output' (an untied unembedding)."
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model the copy was made from.")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    reason: Mapped[str] = mapped_column(
        String(20), comment="Why the row counts as untrained: verified, weakly_verified (latest probes run) or anomalous (top of the anomaly ranking)."
    )
    old_norm: Mapped[float] = mapped_column(Float, comment="L2 norm of the row before.")
    new_norm: Mapped[float] = mapped_column(Float, comment="L2 norm after (the norm of the trained rows' mean).")


class Evaluation(Base):
    __tablename__ = "evaluation"
    __table_args__ = {
        "comment": "How much of a model's behavioural truth (the verified tokens of a probes run) each indicator finds, per evaluation run: "
        "precision, recall and F1 of its top candidates at each budget. Special and placeholder tokens are not counted; the "
        "run's params hold the control floor and the statement of whether the truth separates glitch tokens from ordinary ones."
    }

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The evaluation run.")
    indicator: Mapped[str] = mapped_column(
        String(40),
        primary_key=True,
        comment="Embedding statistic (embed_norm, centroid_dist, unused_cos, anomaly_score, ...), token_indicator name, tokenizer "
        "category ('category:unreachable'), or any_indicator (the union of every indicator's candidates at the budget).",
    )
    budget: Mapped[str] = mapped_column(
        String(8), primary_key=True, comment="Candidate budget: '0.5%', '1%', '2%', '5%', '10%' of the ranked tokens, or 'R' (k = n_truth: R-precision)."
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    probes_run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), comment="The probes run whose verdicts are the truth.")
    k: Mapped[int] = mapped_column(comment="Candidates: the indicator's top k ranked tokens (any_indicator: the union's size).")
    n_ranked: Mapped[int] = mapped_column(comment="Tokens ranked: probed, neither special nor placeholder.")
    n_truth: Mapped[int] = mapped_column(comment="Of those, verified tokens (the truth).")
    n_hits: Mapped[int] = mapped_column(comment="Verified tokens among the candidates.")
    precision: Mapped[float | None] = mapped_column(Float, comment="n_hits / k.")
    recall: Mapped[float | None] = mapped_column(Float, comment="n_hits / n_truth; NULL without verified tokens.")
    f1: Mapped[float | None] = mapped_column(Float, comment="Harmonic mean of precision and recall.")
    average_precision: Mapped[float | None] = mapped_column(
        Float, comment="Mean precision at the rank of each verified token (the same on every budget row of the indicator; NULL for any_indicator)."
    )
    precision_low: Mapped[float | None] = mapped_column(Float, comment="Lower 95 % Wilson bound of precision when the truth is a sample; NULL for a whole sweep.")
    precision_high: Mapped[float | None] = mapped_column(Float, comment="Upper 95 % Wilson bound of precision when the truth is a sample.")
    recall_low: Mapped[float | None] = mapped_column(Float, comment="Lower 95 % Wilson bound of recall when the truth is a sample.")
    recall_high: Mapped[float | None] = mapped_column(Float, comment="Upper 95 % Wilson bound of recall when the truth is a sample.")
    n_missed: Mapped[int] = mapped_column(comment="n_truth - n_hits: verified tokens outside the candidates (any_indicator: missed by every indicator).")


class TokenIndicator(Base):
    __tablename__ = "token_indicator"
    __table_args__ = (
        ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"]),
        {
            "comment": "Indicators computed by the evaluation stage from the model's weights, one row per token and indicator: "
            "head_projection (LM-head singular directions) and identical_rows (tokens sharing one embedding row). Higher = more anomalous."
        },
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True, comment="The evaluation run.")
    indicator: Mapped[str] = mapped_column(String(40), primary_key=True, comment="head_projection or identical_rows (docs/evaluation.md).")
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, comment="Token id.")
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), comment="Model (denormalised for joins).")
    tokenizer_id: Mapped[int] = mapped_column(comment="Tokenizer (denormalised for joins with token).")
    value: Mapped[float] = mapped_column(Float, comment="The indicator's value; higher = more anomalous.")
