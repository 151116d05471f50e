"""Read-side API of the catalog, shared by the CLI and the dashboard, one module per subject.

Every query reads the latest *succeeded* run of a stage: failed runs have no
rows, the committed chunks of a still-running (resumable) probes run are
ignored, and older succeeded runs stay for history.
"""

from catalog.queries.compare import (  # noqa: F401
    TokenAcrossTokenizers,
    agreement_query,
    anomalous_where_query,
    same_string_everywhere,
    same_string_status_query,
    shared_strings_of,
    shared_strings_query,
)
from catalog.queries.detection import (  # noqa: F401
    BUDGET_ORDER,
    EvaluationRun,
    MissedToken,
    evaluation_query,
    evaluation_rows,
    latest_evaluation,
    missed_tokens,
)
from catalog.queries.nokens import (  # noqa: F401
    NokenGeneratorRow,
    NokenRunRow,
    noken_runs,
    noken_runs_query,
    noken_summary,
    noken_summary_query,
    noken_transcripts,
    noken_transcripts_query,
    nokens_query,
)
from catalog.queries.probes import PrecisionRow, ProbeTranscript, TokenVerdictRow, indicator_precision, probe_transcripts, token_verdicts  # noqa: F401
from catalog.queries.prompts import Elicitability, PromptResult, best_search_query, elicitability, prompt_results  # noqa: F401
from catalog.queries.runs import (  # noqa: F401
    ModelSummary,
    catalog_version,
    category_counts_query,
    find_model,
    latest_run_id,
    latest_runs,
    list_models,
    recent_runs_query,
    require_run,
    tokenizers_query,
)
from catalog.queries.status import StageStatus, stage_status  # noqa: F401
from catalog.queries.tokens import (  # noqa: F401
    FILTERABLE_FACTS,
    RANKINGS,
    TOKEN_TABLE_COLUMNS,
    TOKEN_TABLE_SORTS,
    AnomalousToken,
    TokenFilter,
    TokenTable,
    clusters_query,
    fact_values,
    in_tokenizer,
    scatter_sample_query,
    search_tokens_query,
    token_facts_query,
    token_neighbors_query,
    token_stats_query,
    top_anomalous,
    top_anomalous_query,
)
from catalog.queries.card import (  # noqa: F401
    INDICATOR_PCTS,
    INDICATORS,
    indicator_histogram_query,
    indicator_range_query,
    map_points_query,
    token_nokens_query,
    token_prompts_query,
    token_transcripts_query,
    token_verdicts_query,
)
