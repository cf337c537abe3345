"""How a flow ends: `Completed`, or `Completed with warnings` when its feedback was degenerate.

    from flows.outcome import finish, warnings_of
    return finish(result, warnings_of(result.counts["pairs"]))      # at the end of a flow's body

A flow returning the state it should end in: the Prefect UI (and `flow(..., return_state=True)`)
sees a `Completed` state named "Completed with warnings" whose message lists the warnings, while a
caller of the flow (`iterate(config)`, `python flows/iterate.py`, a parent flow) still gets the
result itself: Prefect 3 hands a returned state's data to callers with `return_state=False`.
No warnings: the plain result, so the run ends in the ordinary `Completed`.
"""

from __future__ import annotations

from typing import Any, Iterable

WARNED = "Completed with warnings"
#: the state message stays readable in the UI's run header
MESSAGE_LIMIT = 2000


def warnings_of(pair_counts: dict | None) -> list[str]:
    """The degenerate-feedback lines an iteration's pair counts carry (rlaifv_core.feedback.pairs)."""
    return list((pair_counts or {}).get("warnings") or [])


def finish(result: Any, warnings: Iterable[str]) -> Any:
    """`result` as is when there are no warnings; else a `Completed` state named "Completed with
    warnings" carrying `result` as its data and the warnings (one per line) as its message."""
    warnings = list(warnings)
    if not warnings:
        return result
    from prefect.states import Completed

    message = f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}: " + "; ".join(warnings)
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT - 1] + "…"
    return Completed(name=WARNED, message=message, data=result)
