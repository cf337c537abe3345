"""Items of a list in a language model's reply ("1. …", "- …", "• …"), as the LLM paths read them.

    from rlaifv_core.feedback.llm_lists import parse_list
    parse_list("Facts:\n1. There is a dog.\n2. The dog is brown.", require_marker=True)
    # (['There is a dog.', 'The dog is brown.'], [1, 2])
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"^\s*(?:[-*•]\s+|[-•](?=[A-Za-z])|(\d{1,3})[.)]\s+)")
_TEMPLATE_ECHO = re.compile(r"^\{.*\}$|^\.\.\.$|^…$")


def parse_list(text: str, *, require_marker: bool) -> tuple[list[str], list[int | None]]:
    """List items of a model reply: lines with a leading "- ", "* ", "• " or "1." / "1)" marker
    (the marker is stripped, nothing else is). Empty lines, "###" headers and echoes of the
    template ("{Extracted fact 1}", "...") are dropped. With require_marker=False a line without
    a marker is an item too (the original `get_facts`, minus its first-character drop); lines
    ending in ":" (a preamble such as "Here are the facts:") are never items.
    Returns the items and, per item, its number if it was numbered."""
    items: list[str] = []
    numbers: list[int | None] = []
    for line in text.strip().split("\n"):
        line = line.strip()
        if not line or "###" in line:
            continue
        match = _MARKER.match(line)
        if match:
            item = line[match.end():].strip()
            number = int(match.group(1)) if match.group(1) else None
        elif require_marker or line.strip("*_ ").endswith(":"):
            continue  # prose, or a header such as "Here are the facts:" / "**Facts:**"
        else:
            item, number = line, None
        item = item.strip().strip('"').strip()
        if not item or _TEMPLATE_ECHO.match(item):
            continue
        items.append(item)
        numbers.append(number)
    return items, numbers
