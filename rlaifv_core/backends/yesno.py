"""The surface forms of a yes/no answer, and how to find them among a model's tokens.

    from rlaifv_core.backends.yesno import YES_WORDS, first_token_ids, surface_word
    first_token_ids(tokenizer, YES_WORDS)   # token ids whose first token spells "yes" / "Yes"
    surface_word("\u2581Yes")               # 'Yes': a server's token text without its word-start marker

P(yes) is the summed probability of the yes forms, P(no) of the no forms; the in-process backend
reads them from its logits, an OpenAI-compatible server from the top alternatives it returns.
"""

from __future__ import annotations

from typing import Sequence

YES_WORDS = ("yes", "Yes")
NO_WORDS = ("no", "No")
#: tokenizer word-start markers some servers leave in token texts (SentencePiece, byte-level BPE)
WORD_MARKERS = "\u2581\u0120"


def first_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Token ids of the first token of each surface form (deduplicated; unknowns dropped)."""
    ids: list[int] = []
    unk = tokenizer.unk_token_id
    for word in words:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if tokens and tokens[0] != unk and tokens[0] not in ids:
            ids.append(tokens[0])
    return ids


def surface_word(token: str) -> str:
    """A token's text as a word: whitespace and word-start markers stripped."""
    return token.strip().lstrip(WORD_MARKERS).strip()
