"""HTTP-level rules of the openai backend: what is retried, server-directed delays, the /health wait.

    from rlaifv_core.backends.openai_http import is_permanent, retry_after_s, wait_ready
    wait_ready("http://127.0.0.1:8000/v1", timeout_s=300)   # before a stage's first request
    is_permanent(500, "image input is not supported ...")    # True: retrying cannot help

What real servers send (read in their sources):
* vLLM (vllm/entrypoints/openai/serving_engine.py, api_server.py): a `NotImplementedError` in a
  handler becomes HTTP 501; a bad request 400; an unknown model 404 "The model `x` does not exist.";
  `/health` answers 200 once the engine runs (the port is closed while the weights load).
* llama.cpp server (tools/server/server.cpp, utils.hpp): request errors it raises as
  `std::runtime_error` come back as HTTP 500, e.g. "image input is not supported - hint: if this is
  unexpected, you may need to provide the mmproj" (no `--mmproj`) and "Only one completion choice
  is allowed" (n > 1); `/health` answers 503 "Loading model" until ready.
A 5xx with one of these messages, and any 501, is permanent: retrying only burns the backoff.
An empty-body 500, 502/503/504, 408 and 429 are transient and retried.
"""

from __future__ import annotations

import email.utils
import math
import time

#: substrings (lower case) of server error messages that retrying cannot fix
PERMANENT_MESSAGES = (  # only messages read in a server's source (above): a broad match would skip real retries
    "image input is not supported",           # llama.cpp without --mmproj
    "only one completion choice is allowed",  # llama.cpp, n > 1
)


class Retryable(Exception):
    """One failed attempt worth retrying; `wait_s` is a server-directed delay, if any."""

    def __init__(self, reason: str, wait_s: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s
        self.status = status


def is_permanent(status: int, message: str) -> bool:
    """True when an HTTP error will not go away on retry (4xx but 408/429, 501, known permanent 5xx)."""
    if status in (408, 429):
        return False
    if 400 <= status < 500 or status == 501:
        return True
    text = (message or "").lower()
    return any(marker in text for marker in PERMANENT_MESSAGES)


def retry_after_s(headers) -> float | None:
    """Seconds from `retry-after-ms` / `retry-after` (number or HTTP date); None if absent/invalid."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = parsed.timestamp() - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def health_url(base_url: str) -> str:
    """`/health` at the server root: vLLM, SGLang and llama.cpp serve it beside `/v1`."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/health"


def wait_ready(base_url: str, timeout_s: float, *, poll_s: float = 0.5, headers: dict | None = None,
               sleep=time.sleep) -> float:
    """Poll `/health` until it answers 200 (or 404/405: a server without one, e.g. OpenAI itself);
    connection refused, 503 (loading) and other 5xx are waited out. Returns the seconds waited;
    raises TimeoutError naming the URL and the last answer after `timeout_s`."""
    import httpx

    url = health_url(base_url)
    start = time.monotonic()
    last = "no answer"
    while True:
        try:
            status = httpx.get(url, timeout=max(1.0, poll_s * 4), headers=headers).status_code
            if status == 200 or status in (404, 405):
                return time.monotonic() - start
            last = f"HTTP {status}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if time.monotonic() - start >= timeout_s:
            raise TimeoutError(f"{url} not ready after {timeout_s:g} s (last: {last})")
        sleep(poll_s)
