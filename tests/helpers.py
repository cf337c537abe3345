"""Helpers shared by the tests: free local ports, the README's tested commands and manual per-token
log-probs."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlaifv_core.backends.base import VisualPrompt
    from rlaifv_core.backends.hf import HFBackend

ROOT = Path(__file__).resolve().parent.parent
README_SECTION = "## Running it for real"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_commands() -> list[str]:
    """Command lines of the bash blocks in README.md's "Running it for real" section (comments dropped,
    continuation lines joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_SECTION in text, f"README.md has no {README_SECTION!r} section"
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def readme_command(prefix: str) -> str:
    """The one command line of that section starting with `prefix`."""
    matches = [c for c in readme_commands() if c.startswith(prefix)]
    assert len(matches) == 1, f"README: expected one command starting with {prefix!r}, found {matches}"
    return matches[0]


def manual_token_logps(backend: HFBackend, prompt: VisualPrompt, answer: str) -> list[float]:
    """log π(y_t | x, y_<t) from the model's logits, one unbatched forward, in float64."""
    import torch

    full = backend.encode([backend.render(prompt.question, answer)], [prompt.image])
    head = backend.encode([backend.render(prompt.question)], [prompt.image])
    start = head["input_ids"].shape[1]
    with torch.no_grad():
        logits = backend.model(**full).logits[0].double()
    ids = full["input_ids"][0]
    return [float(torch.log_softmax(logits[t - 1], -1)[ids[t]]) for t in range(start, len(ids))]
