"""Why a result was suggested, in terms an agent can check at a glance: the fields it shares with the query
ticket (same configuration item, same assignment group) and the error codes and key terms both texts contain.

Cheap by design (a regular expression and set intersections per result, no model call): it runs on every
result of every search. Terms leave out scikit-learn's English stop words and everyday ticket words
(TICKET_WORDS: "error", "please", ...) that nearly every ticket has.

    >>> why({"text": "Outlook error 0x800CCC0E on EXCH-01", "cmdb_ci": "EXCH-01"},
    ...     {"text": "0x800ccc0e when Outlook syncs", "cmdb_ci": "EXCH-01"})
    {'fields': {'cmdb_ci': 'EXCH-01'}, 'codes': ['0x800ccc0e'], 'terms': ['outlook']}
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

# Fields whose equality tells an agent something (not state or priority, shared by most tickets).
REASON_FIELDS = ("cmdb_ci", "assignment_group", "category", "subcategory")
# Error codes: hex codes (0x80070005), letter-dash-digits (ORA-12154, KB5034441, SNC-1), and numbers of 3+ digits.
CODE = re.compile(r"\b(?:0x[0-9a-f]{4,}|[a-z]{1,8}-?\d{2,}[a-z0-9]*|\d{3,})\b")
WORD = re.compile(r"\b[a-z][a-z0-9_.'-]*[a-z0-9]\b")
TICKET_WORDS = frozenset("""error errors issue issues problem problems please help hi hello thanks thank regards
dear user users ticket incident request working work works since today morning unable able getting get gets
caller called team need needs still again""".split())
MAX_TERMS = 6


def codes_of(text: str) -> list[str]:
    """Error codes in the text, lower-cased, in order of first appearance."""
    return list(_codes(text))


def terms_of(text: str) -> list[str]:
    """Content words of the text (no stop words, no everyday ticket words, 3+ letters), in order of appearance."""
    return list(_terms(text))


# A search's query is compared with each of its hits, and popular tickets come up in search after search: each
# text's codes and terms are worked out once (the regular expressions were a tenth of a served search's time).
@functools.lru_cache(maxsize=8192)
def _codes(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(CODE.findall(text.lower())))


@functools.lru_cache(maxsize=8192)
def _terms(text: str) -> tuple[str, ...]:
    words = (w.strip(".'-") for w in WORD.findall(text.lower()))
    return tuple(dict.fromkeys(w for w in words if len(w) >= 3 and w not in ENGLISH_STOP_WORDS
                               and w not in TICKET_WORDS and not CODE.fullmatch(w)))


def why(query: Mapping[str, Any], hit: Mapping[str, Any]) -> dict[str, Any]:
    """Shared field values (REASON_FIELDS, non-empty and equal), shared error codes, and up to MAX_TERMS shared terms
    (longest first: a longer shared word is the rarer one) between a query and a result, each a mapping with `text`."""
    fields = {}
    for name in REASON_FIELDS:
        mine, theirs = str(query.get(name) or "").strip(), str(hit.get(name) or "").strip()
        if mine and mine == theirs:
            fields[name] = mine
    query_text, hit_text = str(query.get("text", "")), str(hit.get("text", ""))
    their_codes = set(_codes(hit_text))
    codes = [c for c in _codes(query_text) if c in their_codes]
    their_terms = set(_terms(hit_text))
    shared = [t for t in _terms(query_text) if t in their_terms and t not in codes]
    terms = sorted(shared, key=len, reverse=True)[:MAX_TERMS]
    return {"fields": fields, "codes": codes, "terms": terms}
