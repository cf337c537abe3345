"""yes/no scoring shared by every backend: the surface forms, which tokens count, the low-mass alarm.

    from rlaifv_core.backends.yesno import template_answer_ids, tally, MassAlarm
    yes_ids, no_ids = template_answer_ids(first_answer_token)   # ids from the rendered chat template
    result = tally([(token_text, p), ...])                      # -> YesNo (one rule for all backends)
    alarm = MassAlarm("my-labeler"); alarm.record(results)      # counted, logged when mass is low

A yes/no answer is one of the surface forms "yes", "Yes", " yes", " Yes" (and the same for no).
The in-process backend scores the *first token of the assistant turn* for each form, read from
the model's own chat template (`template_answer_ids`: render the prompt plus the form, take the
first token after the prompt), so a template whose answer starts with a space (SmolVLM's
"Assistant: yes" → `Ġyes`) is scored on the token the model really emits. A first token that does
not spell a whole form (a lone `Ġ` or `▁`) is not counted. An OpenAI-compatible server returns
token texts, not ids: `tally` counts an alternative when its text, word-start marker (`▁`, `Ġ`) read
as a space, is one of the forms: the same tokens the template gives.

P(yes) + P(no) is the share of the next-token mass the forms carry: a low value means the model is
not answering yes or no at all (or the wrong tokens are scored), which would otherwise read as a
confident "no". `MassAlarm` counts low-mass questions, logs a warning once their share passes
`warn_share`, and `check()` raises `YesNoMassError` when (nearly) all questions are low.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable, Sequence

from .base import YesNo

log = logging.getLogger(__name__)

YES_FORMS = ("yes", "Yes", " yes", " Yes")
NO_FORMS = ("no", "No", " no", " No")
YES_WORDS = ("yes", "Yes")
NO_WORDS = ("no", "No")
#: tokenizer word-start markers (SentencePiece, byte-level BPE) that stand for a leading space
WORD_MARKERS = "\u2581\u0120"

#: P(yes)+P(no) below this is "low mass"
LOW_MASS = 0.1
#: warn when this share of questions (or more) has low mass
WARN_SHARE = 0.2
#: a stage error when this share (or more) has low mass, over at least MIN_QUESTIONS questions
ERROR_SHARE = 0.95
MIN_QUESTIONS = 20


class YesNoMassError(RuntimeError):
    """(Nearly) every question's yes/no mass is low: the labeler is not answering yes or no."""


def normalise(token_text: str) -> str:
    """A token's text with a leading word-start marker read as a space."""
    if token_text and token_text[0] in WORD_MARKERS:
        return " " + token_text[1:]
    return token_text


def side_of(token_text: str) -> str | None:
    """'yes', 'no' or None: which answer a token's text spells as a whole form."""
    text = normalise(token_text)
    if text in YES_FORMS:
        return "yes"
    if text in NO_FORMS:
        return "no"
    return None


def template_answer_ids(first_answer_token: Callable[[str], tuple[int, str]]) -> tuple[list[int], list[int]]:
    """(yes ids, no ids): for each surface form, the first token of the assistant turn that answers it.
    `first_answer_token(form)` renders the prompt + `form` and returns (token id, token text)."""
    yes: list[int] = []
    no: list[int] = []
    for forms, ids, side in ((YES_FORMS, yes, "yes"), (NO_FORMS, no, "no")):
        for form in forms:
            token_id, text = first_answer_token(form)
            if side_of(text) == side and token_id not in ids:
                ids.append(token_id)
    return yes, no


def tally(alternatives: Iterable[tuple[str, float]]) -> YesNo:
    """P(yes), P(no) and each counted token's probability from (token text, probability) pairs."""
    parts: dict[str, float] = {}
    p_yes = p_no = 0.0
    for text, p in alternatives:
        side = side_of(text)
        if side is None:
            continue
        parts[text] = parts.get(text, 0.0) + p
        if side == "yes":
            p_yes += p
        else:
            p_no += p
    return YesNo(p_yes=p_yes, p_no=p_no, parts=parts)


class MassAlarm:
    """Counts questions whose P(yes)+P(no) is low; warns (logged, once per crossing) and can raise."""

    def __init__(self, model: str, *, low_mass: float = LOW_MASS, warn_share: float = WARN_SHARE,
                 error_share: float = ERROR_SHARE, min_questions: int = MIN_QUESTIONS):
        self.model, self.low_mass = model, low_mass
        self.warn_share, self.error_share, self.min_questions = warn_share, error_share, min_questions
        self.questions = 0
        self.low = 0
        #: questions whose reply had neither word among its alternatives (no counted token at all)
        self.missing = 0
        self._warned = False
        self._lock = threading.Lock()  # record() is called from the threads of overlapping requests

    @property
    def share(self) -> float:
        return self.low / self.questions if self.questions else 0.0

    def counts(self) -> dict:
        return {"yes_no_questions": self.questions, "yes_no_low_mass": self.low, "yes_no_missing": self.missing,
                "yes_no_low_mass_share": round(self.share, 4)}

    def record(self, results: Sequence[YesNo]) -> None:
        low = sum(1 for r in results if r.p_yes + r.p_no < self.low_mass)
        missing = sum(1 for r in results if not r.parts and r.p_yes + r.p_no == 0)
        with self._lock:
            self.questions += len(results)
            self.low += low
            self.missing += missing
            warn = not self._warned and self.questions and self.share >= self.warn_share
            self._warned = self._warned or bool(warn)
        if warn:
            log.warning("%s: P(yes)+P(no) < %g on %d of %d yes/no questions (%.0f %%): the labeler is not "
                        "answering yes/no (wrong template or answer tokens?); verdicts on those are noise",
                        self.model, self.low_mass, self.low, self.questions, 100 * self.share)

    def check(self) -> None:
        """Raise YesNoMassError when (nearly) all recorded questions have low mass, or when most
        replies carry neither word among their alternatives."""
        if self.questions >= self.min_questions and self.missing * 2 > self.questions:
            raise YesNoMassError(
                f"{self.model}: {self.missing} of {self.questions} yes/no replies have neither yes nor no "
                "among their top alternatives (the labeler does not answer yes/no, or the server returns "
                "token ids): its verdicts would be meaningless")
        if self.questions >= self.min_questions and self.share >= self.error_share:
            raise YesNoMassError(
                f"{self.model}: P(yes)+P(no) < {self.low_mass:g} on {self.low} of {self.questions} yes/no "
                f"questions: the labeler does not answer yes or no with its chat template (or the wrong tokens "
                f"are scored); its verdicts would be meaningless")
