"""Labeler scoring: every claim's yes/no question answered with the image → verdicts → scores.

    from rlaifv_core.feedback.judge import judge_candidates
    verdicts = judge_candidates(labeler_backend, prompts_frame, claims_frame, config.judge)

Verdict = p_yes / (p_yes + p_no) > threshold with p_yes = P(yes)+P(Yes) and p_no = P(no)+P(No)
of the first answer token (a tie is a rejection, as in the original). Score = −#rejected claims.
All questions about one image go to the labeler in one call, so the image and prompt prefix are
encoded once and shared (see HFBackend.yes_no; a server's prefix cache does the same). A labeler
that serves many requests at once (`max_concurrency` > 1: an OpenAI-compatible server) gets images
overlapped: the next image's call starts as soon as fewer than `in_flight` questions (default its
`max_concurrency`) are outstanding, so the server is kept full with as few images in flight as that
takes, each image's questions sent together; results keep the prompts' order. An answer with no claims keeps its row: score 0
and `zero_claims=True`, counted, never silently dropped. Probabilities are kept.

P(yes)+P(no) is watched (backends/yesno.py `MassAlarm`): low on a share of questions is a logged,
counted warning; low on (nearly) all of a stage's questions is a `YesNoMassError`: a labeler that
does not answer yes/no would otherwise read as a confident "no" on every claim.

A claim question that leaves the labeler no room to answer (backends/lengths.py `PromptTooLong`)
cannot be judged: its answer keeps its row with `skipped` = "prompt_too_long: …" (None otherwise),
and the pairs stage leaves it out, counted (`skipped_prompt_too_long`).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import pandas as pd

from ..backends.base import Backend, YesNo
from ..backends.lengths import PROMPT_TOO_LONG, PromptTooLong
from ..backends.yesno import MassAlarm
from ..images import decode_image
from ..backends.oom import run_with_oom_backoff

VERDICT_COLUMNS = ["prompt_id", "sample_idx", "p_yes", "p_no", "accepted", "n_claims", "n_rejected", "score",
                   "zero_claims", "skipped"]


def verdicts_for(probabilities: list[YesNo], threshold: float) -> list[bool]:
    return [p.accepted(threshold) for p in probabilities]


def score(accepted: list[bool]) -> int:
    """The original's answer score: minus the number of rejected claims (0 is best)."""
    return -sum(1 for ok in accepted if not ok)


def judge_candidates(labeler: Backend, prompts: pd.DataFrame, claims: pd.DataFrame, config, *,
                     progress: Callable[[int, int], None] | None = None, in_flight: int | None = None) -> pd.DataFrame:
    """Verdict rows in prompt order. `in_flight`: questions kept outstanding across images before the next
    image starts (default the labeler's `max_concurrency`; 1: one image at a time)."""
    prompt_records = prompts.set_index("prompt_id").to_dict("index")
    rows = []
    groups = list(claims.groupby("prompt_id", sort=True))
    jobs = [({**prompt_records[prompt_id], "prompt_id": prompt_id},
             [q + config.question_suffix for qs in group["questions"] for q in qs]) for prompt_id, group in groups]
    alarm = MassAlarm(str((getattr(labeler, "identity", None) or {}).get("model") or type(labeler).__name__))
    window = max(1, int(in_flight or getattr(labeler, "max_concurrency", 1) or 1))
    for done, ((prompt_id, group), (probabilities, too_long)) in enumerate(
            zip(groups, _answered(labeler, jobs, window)), start=1):
        alarm.record([p for p in probabilities if p is not None])
        cursor = 0
        for row in group.itertuples():
            count = len(row.questions)
            mine = probabilities[cursor:cursor + count]
            why = next((f"{PROMPT_TOO_LONG}: question {i - cursor}: {too_long[i]}"
                        for i in range(cursor, cursor + count) if i in too_long), None)
            cursor += count
            if why is not None:
                mine = [p for p in mine if p is not None]
            accepted = verdicts_for(mine, config.threshold)
            rows.append({
                "prompt_id": prompt_id, "sample_idx": row.sample_idx,
                "p_yes": [p.p_yes for p in mine], "p_no": [p.p_no for p in mine], "accepted": accepted,
                "n_claims": count, "n_rejected": count - sum(accepted), "score": score(accepted),
                "zero_claims": count == 0, "skipped": why,
            })
        if progress:
            progress(done, len(groups))
    if getattr(config, "low_mass_error", True):
        alarm.check()
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _answered(labeler, jobs: list[tuple[dict, list[str]]], window: int):
    """(YesNo list, too-long map) per (prompt record, questions) job, in job order. window == 1: one
    image after the other. Otherwise each image's call runs on a thread, and the next starts only once
    fewer than 2 × `window` questions are outstanding (a window in flight and one queued behind it, so
    a finished batch is replaced at once); the first failure cancels the images not started."""
    def ask(job):
        record, questions = job
        return _fitting_yes_no(labeler, decode_image(record).image, questions)

    if window <= 1 or len(jobs) <= 1:
        yield from map(ask, jobs)
        return
    room = threading.Condition()
    outstanding = [0]

    def release(count: int, _future: Future) -> None:
        with room:
            outstanding[0] -= count
            room.notify_all()

    futures: list[Future] = []
    pool = ThreadPoolExecutor(window, thread_name_prefix="judge-images")
    try:
        for job in jobs:
            with room:
                room.wait_for(lambda: outstanding[0] < 2 * window or any(_failed(f) for f in futures))
                outstanding[0] += max(1, len(job[1]))
            for failed in [f for f in futures if _failed(f)][:1]:
                failed.result()  # an image failed: raise its error, start no more
            futures.append(pool.submit(ask, job))
            futures[-1].add_done_callback(lambda f, n=max(1, len(job[1])): release(n, f))
            while futures and futures[0].done():  # hand back what is finished, in order
                yield futures.pop(0).result()
        while futures:
            yield futures.pop(0).result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _failed(future: Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is not None


def _fitting_yes_no(labeler, image, questions: list[str]) -> tuple[list, dict[int, str]]:
    """(YesNo per question, None where it does not fit the labeler's context; {index: why})."""
    if not questions:
        return [], {}
    try:
        return run_with_oom_backoff(labeler, lambda: labeler.yes_no(image, questions)), {}
    except PromptTooLong as error:
        if error.results is not None:
            return list(error.results), error.skipped
        keep = [i for i in range(len(questions)) if i not in error.skipped]
        got = run_with_oom_backoff(labeler, lambda: labeler.yes_no(image, [questions[i] for i in keep])) if keep else []
        out: list = [None] * len(questions)
        for i, p in zip(keep, got):
            out[i] = p
        return out, error.skipped
