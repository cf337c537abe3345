"""On-policy corrections by resampling from the first rejected claim (`pairs.builder: resample`).

    from rlaifv_core.feedback.resample import locate_prefix, resample_corrections
    locate_prefix("The image shows a dog. There is a cat on the sofa.", "There is a cat on the sofa")
    # 'The image shows a dog.'
    corrections, counts = resample_corrections(scored, prompts, policy, splitter, rewriter, labeler,
                                               claims_config, judge_config, sampling_config, k=4)

For each answer whose verdicts reject a claim, the first rejected claim is located in the answer
by its words (no splitter returns spans, and an LLM splitter rewrites its claims): the earliest
window of the answer holding the claim's content words, moved back to the start of its clause or
list item (after ". ; : ," or "and"). The answer up to there is the prefix; the current policy
continues it `k` times; each prefix + continuation is split, rewritten and judged whole by the same
splitter, rewriter and labeler as the candidates (so a prefix that still holds a rejected claim
cannot be chosen). The best correction has no rejected claim and at least one claim, the most
accepted claims, and on ties the higher policy log-likelihood (`answer_logprobs`; the sample order
where the policy cannot score). `pairs.py`'s `resample` builder pairs it ≻ the original answer.

Counts: `answers_with_rejected_claim`, `not_located` (no content word of the claim found),
`skipped_prompt_too_long` (prompt + prefix + answer budget over the policy's context: no
continuations), `continuations`, `corrected`, `not_corrected` (no continuation free of rejected claims).

Each row also keeps the prefix's *failed* continuation: the policy's most likely continuation that
still has a rejected claim (other than the answer itself), the second rejected side that
`pairs.resample_failed_continuations` adds (correction ≻ failed continuation, same prefix).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, NamedTuple

import pandas as pd

from ..backends.base import GenerationSettings, VisualPrompt
from ..backends.lengths import generate_fitting
from ..backends.oom import run_with_oom_backoff
from ..images import decode_image
from ..seeds import mix_seed
from .claims import split_claims
from .grammar import FUNCTION_WORDS
from .judge import judge_candidates
from .questions import rewrite_questions
from .sampling import Progress

CORRECTION_COLUMNS = ["prompt_id", "sample_idx", "prefix", "rejected_claim", "correction", "correction_claims",
                      "correction_questions", "correction_accepted", "correction_p_yes", "correction_logprob",
                      "failed_continuation", "failed_claims", "failed_questions", "failed_accepted", "failed_p_yes",
                      "tried"]

_WORD = re.compile(r"[\w']+")


class _Job(NamedTuple):
    """An answer to continue: where it came from, its text, the prefix kept and the claim cut off."""
    prompt_id: str
    sample_idx: int
    answer: str
    prefix: str
    claim: str


def _content(words) -> list[str]:
    return [w for w in words if w not in FUNCTION_WORDS and not w.isdigit()] or list(words)


def locate_prefix(answer: str, claim: str) -> str | None:
    """The answer up to the clause (or list item) stating `claim`; None where no word of it occurs."""
    wanted = _content([w.lower() for w in _WORD.findall(claim)])
    spans = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(answer)]
    if not wanted or not spans:
        return None
    best = None  # (words missing, window length, start char)
    for i, (start, _end, word) in enumerate(spans):
        if word not in wanted:
            continue
        found, j = set(), i
        while j < len(spans) and j - i < 3 * len(wanted) + 4 and len(found) < len(set(wanted)):
            if spans[j][2] in wanted:
                found.add(spans[j][2])
            j += 1
        key = (len(set(wanted)) - len(found), j - i, start)
        best = key if best is None or key < best else best
    if best is None:
        return None
    head = answer[:best[2]]
    cut = max((m.end() for m in re.finditer(r"[.;:!?,]\s*|\band\s+", head, re.IGNORECASE)), default=0)
    return head[:cut].rstrip()


def join_continuation(prefix: str, continuation: str) -> str:
    continuation = continuation.strip()
    if not prefix:
        return continuation
    return prefix + ("" if not continuation or continuation[0] in ",.;:!?" else " ") + continuation


def _first_rejected(row) -> str | None:
    return next((c for c, ok in zip(row.claims, row.accepted) if not ok), None)


def resample_corrections(scored: pd.DataFrame, prompts: pd.DataFrame, policy, splitter, rewriter, labeler,
                         claims_config, judge_config, sampling, *, k: int, seed: int = 0,
                         progress: Callable[[str], Progress] | None = None,
                         chunk: int = 64) -> tuple[pd.DataFrame, dict]:
    """One row per answer with a rejected claim that could be located: its prefix, the best of k
    continuations (None where none is free of rejected claims) with its claims and verdicts.

    `progress(label)` (optional) gives the progress callback of one phase ("continuing", "judging")."""
    counts = Counter(answers_with_rejected_claim=0, not_located=0, continuations=0, corrected=0, not_corrected=0)
    records = prompts.set_index("prompt_id", drop=False).to_dict("index")
    jobs: list[_Job] = []
    for row in scored.itertuples():
        if getattr(row, "split_failed", False) is True or not isinstance(row.answer, str):
            continue
        claim = _first_rejected(row) if row.accepted is not None else None
        if claim is None:
            continue
        counts["answers_with_rejected_claim"] += 1
        prefix = locate_prefix(row.answer, claim)
        if prefix is None:
            counts["not_located"] += 1
            continue
        jobs.append(_Job(row.prompt_id, int(row.sample_idx), row.answer, prefix, claim))
    if not jobs:
        return pd.DataFrame(columns=CORRECTION_COLUMNS), dict(counts)
    settings = GenerationSettings(n=k, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                  max_new_tokens=sampling.max_new_tokens, seed=seed)
    visual = [VisualPrompt(decode_image(records[job.prompt_id]).image, records[job.prompt_id]["question"], job.prefix)
              for job in jobs]
    seeds = [mix_seed(seed, "resample", job.prompt_id, job.sample_idx, bits=31) for job in jobs]
    samples = _continue(policy, visual, settings, seeds, counts, chunk, progress and progress("continuing"))
    texts = [[join_continuation(job.prefix, c) for c in cont] for job, cont in zip(jobs, samples)]
    flat = [(j, m, text) for j, row in enumerate(texts) for m, text in enumerate(row)]
    counts["continuations"] = len(flat)
    split = split_claims([(visual[j].question, t) for j, _, t in flat], splitter, claims_config, seed=seed)
    rewritten = rewrite_questions([r.claims for r in split], rewriter, claims_config, seed=seed)
    claim_frame = pd.DataFrame({"prompt_id": [jobs[j].prompt_id for j, _, _ in flat], "sample_idx": range(len(flat)),
                                "questions": [q.questions for q in rewritten]})
    # judged in prompt order; sorted back so that row f holds continuation f's verdicts
    verdicts = judge_candidates(labeler, prompts, claim_frame, judge_config,
                                progress=progress and progress("judging")).set_index("sample_idx").sort_index()
    logprobs = _logprobs(policy, [VisualPrompt(visual[j].image, visual[j].question) for j, _, _ in flat],
                         [t for _, _, t in flat])
    accepted, p_yes, skipped = (verdicts[c].tolist() for c in ("accepted", "p_yes", "skipped"))
    # per prefix: its clean continuations as (fewer claims, lower likelihood, order, index), the min the best;
    # its failed ones (a claim still rejected; not the answer itself) as (lower likelihood, order, index)
    clean: list[list[tuple]] = [[] for _ in jobs]
    failed: list[list[tuple]] = [[] for _ in jobs]
    for f, (j, m, text) in enumerate(flat):
        if split[f].failure or not split[f].claims or skipped[f] is not None:
            continue
        if all(accepted[f]):
            clean[j].append((-len(split[f].claims), -logprobs[f], m, f))
        elif _words(text) != _words(jobs[j].answer):  # the answer itself, however its spaces were joined
            failed[j].append((-logprobs[f], m, f))
    rows = []
    for j, job in enumerate(jobs):
        row = {"prompt_id": job.prompt_id, "sample_idx": job.sample_idx, "prefix": job.prefix, "rejected_claim": job.claim,
               "tried": len(texts[j]), "correction": None, "correction_logprob": None, "failed_continuation": None,
               **{f"{side}_{part}": [] for side in ("correction", "failed")
                  for part in ("claims", "questions", "accepted", "p_yes")}}
        if clean[j]:
            f = min(clean[j])[3]
            row.update(correction=flat[f][2], correction_logprob=logprobs[f],
                       **_judged("correction", split[f].claims, rewritten[f].questions, accepted[f], p_yes[f]))
            counts["corrected"] += 1
        else:
            counts["not_corrected"] += 1
        if failed[j]:  # the policy's most likely error after the prefix (a second rejected side, on request)
            f = min(failed[j])[2]
            row.update(failed_continuation=flat[f][2],
                       **_judged("failed", split[f].claims, rewritten[f].questions, accepted[f], p_yes[f]))
        rows.append(row)
    return pd.DataFrame(rows, columns=CORRECTION_COLUMNS), dict(counts)


def _judged(side: str, claims, questions, accepted, p_yes) -> dict:
    return {f"{side}_claims": list(claims), f"{side}_questions": list(questions),
            f"{side}_accepted": list(accepted), f"{side}_p_yes": list(p_yes)}


def _words(text) -> list[str]:
    return str(text).split()


def _continue(policy, visual: list[VisualPrompt], settings: GenerationSettings, seeds: list[int], counts: Counter,
              chunk: int, progress: Progress | None) -> list[list[str]]:
    """k continuations per prefix, in chunks (each prefix's own seed: chunking changes nothing); none for a
    prefix whose prompt + prefix + answer budget is over the policy's context (`skipped_prompt_too_long`)."""
    samples: list[list[str]] = []
    for start in range(0, len(visual), chunk):
        part = slice(start, start + chunk)
        answers, too_long = run_with_oom_backoff(
            policy, lambda: generate_fitting(policy, visual[part], settings, seeds[part]))
        counts["skipped_prompt_too_long"] += len(too_long)
        samples += [a if a is not None else [] for a in answers]
        if progress:
            progress(len(samples), len(visual))
    return samples


def _logprobs(policy, prompts, texts) -> list[float]:
    try:
        return [float(sum(lp)) for lp in policy.answer_logprobs(prompts, texts)]
    except NotImplementedError:
        return [0.0] * len(texts)
