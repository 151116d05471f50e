"""Verdicts and failure categories: pure functions of probe outputs.

Nothing here touches a model or the database, so every rule is unit-testable
on fixed strings and numbers.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

# Checked in this order; the first that matches names the failure.
FAILURE_CATEGORIES = ("empty", "evasion", "question_repeat", "spelling_out", "random_chars", "substitution", "hallucination")
VERDICTS = ("verified", "weakly_verified", "rejected", "untested")
# Probe kinds whose target is the token itself; spell probes only add a failure category.
TARGET_KINDS = frozenset({"repeat", "meaning", "continue"})

EVASION = re.compile(
    r"\b(i'?m sorry|sorry|i can(no|')t|i am (not|unable)|i'?m (not|unable)|unable to|as an ai|i don'?t (know|understand|have)|"
    r"not sure|could you (please )?(provide|clarify)|please (provide|clarify)|no (such|specific) (text|string|word))\b",
    re.IGNORECASE,
)
# Single characters separated by hyphens, commas, dots or spaces: "f-i-r-s-t", "S, P, O".
SPELLED = re.compile(r"^\W*([^\W\d_]\W{1,3}){2,}[^\W\d_]?\W*$")
WORD = re.compile(r"[^\W\d_]{2,}")
SLOT_END = re.compile(r"[\n\"'“”‘’`,.;:!?()\[\]]")
QUESTION_REPEAT_MIN_WORDS = 3
SUBSTITUTION_MAX_WORDS = 2
RANDOM_MAX_LETTER_SHARE = 0.5


@dataclass(frozen=True)
class Thresholds:
    """Stored in each probes run's params, so a verdict can always be traced back to its rule."""

    verified_below: float = 0.01
    weak_below: float = 0.1


@dataclass(frozen=True)
class ProbeOutcome:
    """What the verdict needs from one probe of one token."""

    kind: str
    passed: bool
    target_prob: float
    failure_category: str | None


@dataclass(frozen=True)
class Verdict:
    verdict: str
    max_target_prob: float | None
    n_probes: int
    n_passed: int
    failure_category: str | None


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"\w+", text)]


def _letters(text: str) -> str:
    return "".join(ch.lower() for ch in unicodedata.normalize("NFKC", text) if ch.isalnum())


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def spells(output: str, token_text: str) -> bool:
    """Whether the output's first line spells the token out: separated characters whose letters start with the token's."""
    wanted, line = _letters(token_text), _first_line(output)
    return bool(wanted) and (len(wanted) == 1 or bool(SPELLED.match(line))) and _letters(line).startswith(wanted)


def _repeats_question(output: str, question: str) -> bool:
    out, asked = _words(output), _words(question)
    match = SequenceMatcher(None, out, asked, autojunk=False).find_longest_match(0, len(out), 0, len(asked))
    return match.size >= QUESTION_REPEAT_MIN_WORDS


def _looks_random(text: str) -> bool:
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    return not WORD.search(text) or letters / len(visible) < RANDOM_MAX_LETTER_SHARE


def _slot(text: str) -> str:
    """The part of the answer where the token should have been: up to the first quote, newline or punctuation."""
    return SLOT_END.split(text.strip(), maxsplit=1)[0]


def failure_category(output: str, token_text: str, question: str) -> str:
    """Name how a failed probe failed, from its output (special tokens already removed).

    ``question`` is the probe's prompt text without the placeholder; ``token_text``
    the probed token's decoded text.
    """
    text = output.strip()
    if not text:
        return "empty"
    if EVASION.search(text):
        return "evasion"
    if _repeats_question(text, question):
        return "question_repeat"
    if SPELLED.match(_first_line(text)):
        return "spelling_out"
    if _looks_random(text):
        return "random_chars"
    slot = _slot(text)
    if slot and len(slot.split()) <= SUBSTITUTION_MAX_WORDS and _letters(slot) != _letters(token_text):
        return "substitution"
    return "hallucination"


def dominant_category(categories: Sequence[str | None]) -> str | None:
    """Most frequent category; ties go to the one listed first in FAILURE_CATEGORIES."""
    counts = Counter(c for c in categories if c is not None)
    if not counts:
        return None
    return max(FAILURE_CATEGORIES, key=lambda c: (counts.get(c, 0), -FAILURE_CATEGORIES.index(c)))


def verdict(probes: Sequence[ProbeOutcome], thresholds: Thresholds) -> Verdict:
    """verified / weakly_verified / rejected from the highest target probability over the target probes.

    A NaN probability (an overflowed half-precision forward) measured nothing and is left out:
    ``max`` over NaNs would depend on the order of the probes.
    """
    target = [p for p in probes if p.kind in TARGET_KINDS and not math.isnan(p.target_prob)]
    if not target:
        return Verdict("untested", None, len(probes), sum(p.passed for p in probes), dominant_category([p.failure_category for p in probes]))
    max_prob = max(p.target_prob for p in target)
    if max_prob < thresholds.verified_below:
        label = "verified"
    elif max_prob < thresholds.weak_below:
        label = "weakly_verified"
    else:
        label = "rejected"
    return Verdict(label, max_prob, len(probes), sum(p.passed for p in probes), dominant_category([p.failure_category for p in probes]))


def precision(n_tested: int, n_hits: int) -> float | None:
    return n_hits / n_tested if n_tested else None
