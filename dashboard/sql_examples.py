"""Saved queries of the SQL page: real questions about the catalog, in SQL that SQLite and PostgreSQL both run.

Each reads the latest succeeded embedding_stats run of every model, as the CLI and the pages do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    question: str
    sql: str


LATEST_STATS = """WITH latest AS (
  SELECT model_id, MAX(id) AS run_id
  FROM ingest_run
  WHERE stage = 'embedding_stats' AND status = 'succeeded'
  GROUP BY model_id
)"""

EXAMPLES = [
    Example(
        "What are the 20 most anomalous tokens of each model (special tokens left out)?",
        f"""{LATEST_STATS},
cutoff AS MATERIALIZED (
  -- the rank of each model's 20th non-special token: walks the (run_id, anomaly_rank) index, stops there
  SELECT l.model_id, l.run_id,
         COALESCE((SELECT s.anomaly_rank
          FROM embedding_stat s
          JOIN token t ON t.tokenizer_id = s.tokenizer_id AND t.token_id = s.token_id
          WHERE s.run_id = l.run_id AND NOT t.is_special
          ORDER BY s.anomaly_rank
          LIMIT 1 OFFSET 19), 2147483647) AS last_rank
  FROM latest l
)
SELECT m.name AS model, s.anomaly_rank, s.tokenizer_id, s.token_id, t.piece, t.category,
       s.unused_cos, s.embed_norm, s.centroid_dist
FROM cutoff c
JOIN model m ON m.id = c.model_id
JOIN embedding_stat s ON s.run_id = c.run_id AND s.anomaly_rank <= c.last_rank
JOIN token t ON t.tokenizer_id = s.tokenizer_id AND t.token_id = s.token_id
WHERE NOT t.is_special
ORDER BY model, s.anomaly_rank""",
    ),
    Example(
        "Which tokenizer categories make up the most anomalous 1% of each model?",
        f"""{LATEST_STATS}
SELECT m.name AS model, t.category, COUNT(*) AS n_tokens,
       ROUND(100.0 * COUNT(*) / SUM(COUNT(*)) OVER (PARTITION BY m.name), 1) AS share_pct
FROM latest l
JOIN model m ON m.id = l.model_id
JOIN embedding_stat s ON s.run_id = l.run_id AND s.token_id >= 0
  -- token_id >= 0 is true of every row: it makes SQLite read the whole run in storage order (its primary key)
JOIN token t ON t.tokenizer_id = s.tokenizer_id AND t.token_id = s.token_id
WHERE s.anomaly_score >= 0.99
GROUP BY m.name, t.category
ORDER BY m.name, n_tokens DESC""",
    ),
    Example(
        "Do the indicators agree? Tokens in the top 1% of two indicators at once, per model.",
        f"""{LATEST_STATS}
SELECT m.name AS model,
       SUM(CASE WHEN s.unused_cos_pct >= 0.99 THEN 1 ELSE 0 END) AS top_unused_cos,
       SUM(CASE WHEN s.unused_cos_pct >= 0.99 AND s.embed_norm_pct >= 0.99 THEN 1 ELSE 0 END) AS also_low_norm,
       SUM(CASE WHEN s.unused_cos_pct >= 0.99 AND s.centroid_dist_pct >= 0.99 THEN 1 ELSE 0 END) AS also_near_centroid
FROM latest l
JOIN model m ON m.id = l.model_id
JOIN embedding_stat s ON s.run_id = l.run_id AND s.token_id >= 0
  -- token_id >= 0 is true of every row: it makes SQLite read the whole run in storage order (its primary key)
GROUP BY m.name
ORDER BY m.name""",
    ),
    Example(
        "Which strings are anomalous (top 1%) in one model but ordinary tokens in another?",
        f"""{LATEST_STATS},
scored AS (
  SELECT m.name AS model, t.norm_key, MAX(s.anomaly_score) AS score
  FROM latest l
  JOIN model m ON m.id = l.model_id
  JOIN embedding_stat s ON s.run_id = l.run_id AND s.token_id >= 0
  -- token_id >= 0 is true of every row: it makes SQLite read the whole run in storage order (its primary key)
  JOIN token t ON t.tokenizer_id = s.tokenizer_id AND t.token_id = s.token_id
  WHERE t.norm_key IS NOT NULL AND NOT t.is_special
    -- only strings anomalous somewhere can answer: look the others up by the norm_key index
    AND t.norm_key IN (
      SELECT t2.norm_key
      FROM latest l2
      JOIN embedding_stat s2 ON s2.run_id = l2.run_id AND s2.token_id >= 0
      JOIN token t2 ON t2.tokenizer_id = s2.tokenizer_id AND t2.token_id = s2.token_id
      WHERE s2.anomaly_score >= 0.99 AND t2.norm_key IS NOT NULL
    )
  GROUP BY m.name, t.norm_key
)
SELECT a.norm_key, a.model AS anomalous_in, a.score AS score_there,
       b.model AS ordinary_in, b.score AS score_here
FROM scored a
JOIN scored b ON b.norm_key = a.norm_key AND b.model <> a.model
WHERE a.score >= 0.99 AND b.score < 0.5
ORDER BY a.score DESC, a.norm_key
LIMIT 200""",
    ),
    Example(
        "Which k-means clusters hold the 100 most anomalous tokens of each model?",
        f"""{LATEST_STATS}
SELECT m.name AS model, c.cluster_id, c.size, c.centroid_norm, c.dist_to_global_centroid,
       COUNT(*) AS top100_members
FROM latest l
JOIN model m ON m.id = l.model_id
JOIN cluster c ON c.run_id = l.run_id
JOIN embedding_stat s ON s.run_id = c.run_id AND s.cluster_id = c.cluster_id
WHERE s.anomaly_rank <= 100
GROUP BY m.name, c.cluster_id, c.size, c.centroid_norm, c.dist_to_global_centroid
ORDER BY m.name, top100_members DESC""",
    ),
    Example(
        "How many tokens of each tokenizer can never come out of encoding their own text?",
        """SELECT tk.name AS tokenizer, t.unreachable_kind, COUNT(*) AS n_tokens,
       MIN(t.piece) AS example_piece
FROM token t
JOIN tokenizer tk ON tk.id = t.tokenizer_id
WHERE t.is_unreachable
GROUP BY tk.name, t.unreachable_kind
ORDER BY tk.name, n_tokens DESC""",
    ),
]
