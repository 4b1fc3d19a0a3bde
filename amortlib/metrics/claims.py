"""Prose that is checked against the numbers.

A ``Claim`` pairs a sentence with a predicate on a results table. ``check_claims`` renders the
sentences only if every predicate holds, and otherwise raises ``ClaimError`` listing the false
ones, so a rerun that changes the science fails loudly instead of leaving stale prose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd


class ClaimError(AssertionError):
    """One or more sentences of the text are contradicted by the results table."""


@dataclass(frozen=True)
class Claim:
    text: str
    holds: Callable[[pd.DataFrame], bool]


def check_claims(claims: list[Claim], table: pd.DataFrame) -> str:
    """All claim texts as a Markdown bullet list, or ``ClaimError`` naming every false claim."""
    false = []
    for c in claims:
        try:
            ok = bool(c.holds(table))
        except Exception as err:  # a predicate that cannot be evaluated is not a true claim
            ok, c = False, Claim(f"{c.text} [could not evaluate: {type(err).__name__}: {err}]", c.holds)
        if not ok:
            false.append(c.text)
    if false:
        raise ClaimError("the results contradict the text:\n- " + "\n- ".join(false))
    return "\n".join(f"- {c.text}" for c in claims)


def value(table: pd.DataFrame, column: str, **where):
    """The single value of ``column`` in the row matching ``where`` (error if not exactly one)."""
    rows = table
    for k, v in where.items():
        rows = rows[rows[k] == v]
    if len(rows) != 1:
        raise KeyError(f"{len(rows)} rows match {where}")
    return rows[column].iloc[0]
