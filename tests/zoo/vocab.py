"""Real tokenizer vocabularies, offline: the GGUF vocab files llama.cpp ships in its PyPI sdist.

    from tests.zoo.vocab import vocab_tokenizer
    tok = vocab_tokenizer("llama-spm")     # Llama-2's 32,000-token SentencePiece vocabulary (real ids)

The `llama-cpp-python` source distribution (77 MB, fetched once with pip into the cache folder;
needs `gguf` and `scikit-build-core` installed) holds `vendor/llama.cpp/models/ggml-vocab-*.gguf`;
transformers converts each to a fast tokenizer once (`gguf_file=`), saved as `tokenizer.json` under
`$RLAIFV_CACHE/zoo-vocab/<name>` so later sessions load it in milliseconds.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from rlaifv_core.store import cache_root as project_cache_root

SDIST = "llama-cpp-python==0.3.36"


class VocabUnavailable(RuntimeError):
    """The vocabulary files could not be fetched (PyPI unreachable, pip or gguf missing)."""


def cache_root() -> Path:
    root = project_cache_root() / "zoo-vocab"
    root.mkdir(parents=True, exist_ok=True)
    return root


def gguf_folder() -> Path:
    """The folder holding the ggml-vocab-*.gguf files (downloaded and extracted on first use)."""
    folder = cache_root() / "gguf"
    if (folder / "ggml-vocab-llama-spm.gguf").exists():
        return folder
    download = cache_root() / "sdist"
    download.mkdir(exist_ok=True)
    archives = list(download.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", SDIST, "-d", str(download)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(download.glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise VocabUnavailable(f"`pip download {SDIST}` failed (PyPI unreachable, or scikit-build-core "
                                   f"missing): {done.stderr.strip()[-300:]}")
    folder.mkdir(exist_ok=True)
    with tarfile.open(archives[0]) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if "/vendor/llama.cpp/models/" in member.name and name.startswith("ggml-vocab-") and name.endswith(".gguf"):
                extracted = tar.extractfile(member)
                (folder / name).write_bytes(extracted.read())
    return folder


def vocab_tokenizer(name: str):
    """A fast tokenizer with the real vocabulary of `ggml-vocab-<name>.gguf` (cached as tokenizer.json)."""
    from transformers import AutoTokenizer

    saved = cache_root() / name
    if (saved / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(saved)
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise VocabUnavailable("the `gguf` package is needed to read the GGUF vocabularies") from error
    tokenizer = AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=f"ggml-vocab-{name}.gguf")
    tokenizer.save_pretrained(saved)
    return AutoTokenizer.from_pretrained(saved)
