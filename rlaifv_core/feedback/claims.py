"""Answer → atomic claims (the "divide" half of RLAIF-V's divide-and-conquer, docs/method.md §3).

    from rlaifv_core.feedback.claims import split_claims, split_claims_rules
    split_claims_rules("there is a red circle , a blue square and a green triangle .")
    # ['there is a red circle', 'there is a blue square', 'there is a green triangle']
    results = split_claims([(question, answer), ...], config.models.splitter, config.claims)
    results[0].claims, results[0].failure, results[0].raw

Two splitters behind one call:

* rules (no model, `claim_rules.py`): one claim per clause, one existential claim per listed noun
  phrase; exact on the shapes world's language.
* an LLM (any Backend with chat()): the project's own prompt, or the `rlaifv-llama3` preset
  (the released RLAIF-V split model's prompt, verbatim) with its `get_facts` parsing minus its
  defects: no first-character drop, no 300-word truncation (long answers go in sentence-aligned
  chunks of config.chunk_words words), an unparsable reply is retried once with another seed
  and then recorded as a failure of that answer (never raised, never silently empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..backends.lengths import PROMPT_TOO_LONG, PromptTooLong
from ..seeds import mix_seed
from .claim_rules import split_claims_rules
from .grammar import nlp
from .llm_lists import parse_list
from .text_roles import is_rules, text_backend

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.base import Backend
    from ..config import ClaimsConfig

__all__ = [
    "ClaimResult",
    "LLAMA3_SPLIT_PROMPT",
    "PROJECT_SPLIT_PROMPT",
    "chunk_answer",
    "split_claims",
    "split_claims_llm",
    "split_claims_rules",
    "split_prompt_llama3",
    "split_prompt_project",
]


@dataclass
class ClaimResult:
    """One answer's claims.

    failure is None when the claims are complete (possibly none: an answer that states
    nothing); otherwise why no claims could be extracted (claims is then []). raw holds every
    model reply, retries included ([] for the rule-based splitter).
    """

    claims: list[str]
    failure: str | None = None
    raw: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# LLM splitter
# --------------------------------------------------------------------------------------------

PROJECT_SPLIT_PROMPT = """\
Extract the facts that the answer below states about an image, so that each fact can be \
checked against the image on its own.

Rules:
- Write one fact per line, each line starting with "- ".
- Each fact is one short, self-contained sentence about one thing: an object, an attribute \
(colour, size, material, number), a position, a relation, an action, or text in the image.
- Name things explicitly: replace pronouns ("it", "they", "she") by what they refer to.
- Keep negations as stated ("There is no dog in the image.").
- Use only what the answer states: add nothing, infer nothing, correct nothing.
- Use the question only to complete short answers: for "Is there a dog?", the answer "Yes." \
gives "- There is a dog.".
- Leave out opinions, feelings, guesses about things outside the image, and remarks about the \
answer itself.
- If the answer states no fact about the image, reply with the single line: - NONE

Question: {question}
Answer{part}: {answer}

Facts:"""

# The released RLAIF-V Llama-3-8B split model's prompt, verbatim (utils/llama3_8b_inference.py
# wrap_prompt_divide_to_list); the original then truncated it to 300 words (we chunk instead).
LLAMA3_SPLIT_PROMPT = (
    "You are an expert in extracting facts from the given question-answer pair for an image. Your "
    "task is to extract and rewrite the facts mentioned in the question-answer pair into "
    "self-contained sentences. Exclude opinions or subjective statements.\n\nYou should present "
    "your result in the following format:\n### Facts:\n- {Extracted fact 1}\n- {Extracted fact 2}\n"
    "- ...\n\n### Question-answer pair:\nQuestion: "
)


def split_prompt_llama3(question: str, answer: str) -> str:
    return LLAMA3_SPLIT_PROMPT + question + "\nAnswer: " + answer


def split_prompt_project(question: str, answer: str, part: int = 1, parts: int = 1) -> str:
    label = f" (part {part} of {parts}; extract the facts of this part only)" if parts > 1 else ""
    return PROJECT_SPLIT_PROMPT.format(question=question, answer=answer, part=label)


def chunk_answer(answer: str, chunk_words: int) -> list[str]:
    """Sentence-aligned chunks of at most chunk_words whitespace-separated words each (a longer
    sentence is cut at word boundaries). Every word of the answer is in exactly one chunk."""
    words = answer.split()
    if chunk_words <= 0 or len(words) <= chunk_words:
        return [answer]
    sentences = [s.text.strip() for s in nlp()(answer).sents if s.text.strip()]
    pieces: list[str] = []
    for sentence in sentences:
        sw = sentence.split()
        if len(sw) <= chunk_words:
            pieces.append(sentence)
        else:
            pieces.extend(" ".join(sw[k:k + chunk_words]) for k in range(0, len(sw), chunk_words))
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for piece in pieces:
        n = len(piece.split())
        if current and count + n > chunk_words:
            chunks.append(" ".join(current))
            current, count = [], 0
        current.append(piece)
        count += n
    if current:
        chunks.append(" ".join(current))
    return chunks


_NONE_REPLY = re.compile(r"^\W*(none|no facts?)\W*$", re.IGNORECASE)


def _parse_facts(text: str, preset: str) -> tuple[list[str], bool]:
    """(facts, explicitly_none). The preset parses like the original `get_facts` (every
    non-empty, non-### line) but strips a list marker only where there is one."""
    if preset == "rlaifv-llama3":
        facts, _ = parse_list(text, require_marker=False)
        return facts, False
    facts, _ = parse_list(text, require_marker=True)
    if len(facts) == 1 and _NONE_REPLY.match(facts[0]):
        return [], True
    if not facts and _NONE_REPLY.match(text.strip() or "x"):
        return [], True
    facts = [f for f in facts if not _NONE_REPLY.match(f)]
    return facts, False


def split_claims_llm(backend: "Backend", question: str, answer: str, config: "ClaimsConfig | None" = None,
                     *, seed: int = 0) -> ClaimResult:
    """Claims of one answer by an LLM (config.preset picks the prompt). Never raises on a bad
    reply: an unparsable chunk is retried once with another seed, then the whole answer is a
    failure (claims=[], the reason, all raw replies). Backend errors propagate."""
    from ..config import ClaimsConfig

    config = config or ClaimsConfig()
    if not answer or not answer.strip():
        return ClaimResult([], None, [])
    preset = config.preset
    chunks = chunk_answer(answer, config.chunk_words)
    claims: list[str] = []
    raw: list[str] = []
    for k, chunk in enumerate(chunks):
        if preset == "rlaifv-llama3":
            content = split_prompt_llama3(question, chunk)
        else:
            content = split_prompt_project(question, chunk, k + 1, len(chunks))
        for attempt in range(2):
            try:
                reply = backend.chat([{"role": "user", "content": content}], temperature=config.temperature,
                                     top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                                     seed=mix_seed(seed, "split", preset, question, answer, k, attempt, bits=31))
            except PromptTooLong as error:  # no room to answer: this answer's failure, counted by the stage
                return ClaimResult([], f"{PROMPT_TOO_LONG}: {error}", raw)
            raw.append(reply.text)
            facts, explicitly_none = _parse_facts(reply.text, preset)
            if facts or explicitly_none:
                claims.extend(facts)
                break
        else:
            where = f"chunk {k + 1}/{len(chunks)}: " if len(chunks) > 1 else ""
            return ClaimResult([], f"{where}no list items in the reply after 2 attempts", raw)
    return ClaimResult(claims, None, raw)


def split_claims(answers: Sequence[tuple[str, str]], splitter_spec_or_backend: Any,
                 config: "ClaimsConfig | None" = None, *, seed: int = 0) -> list[ClaimResult]:
    """Claims for many (question, answer) pairs, in order.

    splitter_spec_or_backend: "rules" / None / a ModelSpec with backend="rules" → the rule-based
    splitter (the question is unused); a Backend → LLM splitting with config.preset; another
    ModelSpec (hf/openai) → loaded with backends.load_backend and closed afterwards.
    """
    if is_rules(splitter_spec_or_backend):
        results = []
        for _question, answer in answers:
            try:
                results.append(ClaimResult(split_claims_rules(answer), None, []))
            except Exception as exc:  # one odd answer must not sink a stage; it is recorded
                results.append(ClaimResult([], f"rule splitter error: {exc!r}", []))
        return results
    backend, owned = text_backend(splitter_spec_or_backend)
    try:
        return [split_claims_llm(backend, q, a, config, seed=seed) for q, a in answers]
    finally:
        if owned:
            backend.close()
