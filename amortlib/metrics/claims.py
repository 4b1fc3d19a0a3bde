"""Prose that is checked against the numbers.

A ``Claim`` pairs a sentence with a predicate on a results table. ``check_claims`` renders the
sentences only if every predicate holds, and otherwise raises ``ClaimError`` listing the false
ones, so a change that contradicts the book's own results fails loudly instead of leaving stale
prose. On a reader's own rerun (``strict=False``) the false sentences are shown marked ✗
under a warning instead, so the book still builds and says what no longer holds.
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


def evaluate(claims: list[Claim], table: pd.DataFrame) -> list[tuple[Claim, bool, str]]:
    """Each claim with whether it holds on ``table`` and, when its predicate could not be
    evaluated (a setting or column missing from the results), why; such a claim does not hold."""
    out = []
    for c in claims:
        try:
            out.append((c, bool(c.holds(table)), ""))
        except KeyError as err:   # the setting or column it speaks of is not in the results
            out.append((c, False, f"not checked: {err.args[0] if err.args else err}"))
        except Exception as err:  # a predicate that cannot be evaluated is not a true claim
            out.append((c, False, f"could not evaluate: {type(err).__name__}: {err}"))
    return out


def check_claims(claims: list[Claim], table: pd.DataFrame, strict: bool = True) -> str:
    """The claim texts as a Markdown bullet list.

    ``strict`` (the book's own, published results): every claim must hold, else ``ClaimError``
    naming every false one. Not strict (a reader's rerun, which may differ by chance or on
    purpose): the claims that hold as a list, then those the results do not support under a
    warning, each with the reason when it could not be evaluated; the page still builds."""
    verdicts = evaluate(claims, table)
    false = [f"{c.text} [{why}]" if why else c.text for c, ok, why in verdicts if not ok]
    if false and strict:
        raise ClaimError("the results contradict the text:\n- " + "\n- ".join(false))
    text = "\n".join(f"- {c.text}" for c, ok, _ in verdicts if ok)
    if false:
        text += (f"\n\n**Not supported by these results ({len(false)} of {len(claims)} statements).** "
                 "These sentences describe the book's published results; the results shown on this page "
                 "do not bear them out (or lack the settings they need):\n\n"
                 + "\n".join(f"- ✗ {t}" for t in false))
    return text


def value(table: pd.DataFrame, column: str, **where):
    """The single value of ``column`` in the row matching ``where`` (error if not exactly one)."""
    rows = table
    for k, v in where.items():
        rows = rows[rows[k] == v]
    if len(rows) != 1:
        raise KeyError(f"{len(rows)} rows match {where}")
    return rows[column].iloc[0]
