"""Small in-process HTTP servers the tests talk to (OpenAI-compatible VLM, …)."""
