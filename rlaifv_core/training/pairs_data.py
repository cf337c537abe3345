"""Preference pairs for training: read from anywhere, keyed by content, shaped as TRL's vision rows.

    from rlaifv_core.training import load_pairs, to_trl_dataset
    pairs = load_pairs("runs/demo/iter-1/pairs.parquet")        # or s3://…, or a `datasets` hub id
    dataset = to_trl_dataset(pairs, ref_logps=reference_frame)   # prompt/chosen/rejected/images (+ ref columns)

Accepted: our pairs parquet or the public RLAIF-V-Dataset schema (question, chosen, rejected and an
image as {bytes, path} or `image_path`). `pair_keys` gives each pair a content key (image bytes and
the three texts) that aligns cached reference log-probs with the pairs they were computed for.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd

FILE_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl", ".arrow", ".tsv", ".txt")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
REF_TOKEN_COLUMNS = ("ref_chosen_token_logps", "ref_rejected_token_logps")
#: the cached reference table: one row per pair, in the pairs' order
REF_FRAME_COLUMNS = ("pair_key", *REF_COLUMNS, *REF_TOKEN_COLUMNS)


class PairsFileError(ValueError):
    """A pairs source that cannot train: not a parquet file, not found, or without a usable pair."""


def _read_parquet(fs, file: str, name: str) -> pd.DataFrame:
    with fs.open(file, "rb") as handle:
        data = handle.read()
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - pyarrow's ArrowInvalid and friends name no file
        raise PairsFileError(f"{name}: not a parquet file ({type(error).__name__}: {error}); pairs files are "
                             f"parquet (our pairs schema or the RLAIF-V-Dataset's)") from error


def load_pairs(source: str | os.PathLike | pd.DataFrame, *, split: str = "train", limit: int | None = None,
               storage_options: dict | None = None) -> pd.DataFrame:
    """Preference pairs as a DataFrame with at least question, chosen, rejected and an image
    (`image` {bytes, path} or `image_path`): our pairs parquet or the public RLAIF-V-Dataset schema.

    `source`: a DataFrame; a parquet file or folder of parquet files, local or any fsspec URL
    (s3://… with credentials from AWS_* variables); a folder written by `Dataset.save_to_disk`; or
    a `datasets` hub id such as `openbmb/RLAIF-V-Dataset` (`split`, first `limit` rows)."""
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        text = str(source)
        local = Path(text)
        if local.is_dir() and (local / "dataset_info.json").exists():
            import datasets

            frame = datasets.load_from_disk(text).to_pandas()
        elif "://" in text or local.exists():
            import fsspec

            fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
            files = sorted(fs.glob(f"{path.rstrip('/')}/**/*.parquet")) if fs.isdir(path) else [path]
            if not files:
                raise FileNotFoundError(f"{text}: no parquet files")
            names = [text] if files == [path] else [fs.unstrip_protocol(file) for file in files]
            frame = pd.concat([_read_parquet(fs, file, name) for file, name in zip(files, names)], ignore_index=True)
        elif local.suffix.lower() in FILE_SUFFIXES:  # a file name, not a hub id: never ask the hub for it
            raise FileNotFoundError(f"{text}: pairs file not found")
        else:
            import datasets

            wanted = f"{split}[:{limit}]" if limit else split
            frame = datasets.load_dataset(text, split=wanted).to_pandas()
    check_pair_columns(frame, "<DataFrame>" if isinstance(source, pd.DataFrame) else str(source))
    if limit:
        frame = frame.iloc[:limit]
    return frame.reset_index(drop=True)


def check_pair_columns(frame: pd.DataFrame, where: str = "pairs") -> None:
    """A clear error naming the source and the missing columns (before any model is loaded)."""
    missing = [c for c in ("question", "chosen", "rejected") if c not in frame.columns]
    if "image" not in frame.columns and "image_path" not in frame.columns:
        missing.append("image or image_path")
    if missing:
        raise ValueError(f"{where}: pairs need question, chosen, rejected and image or image_path columns; "
                         f"missing {missing} (has {sorted(map(str, frame.columns))})")


def image_bytes(row: dict, data_root: str | None) -> bytes:
    image = row.get("image")
    if isinstance(image, dict) and image.get("bytes"):
        return bytes(image["bytes"])
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if image is not None and hasattr(image, "save"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    path = (image.get("path") if isinstance(image, dict) else None) or row.get("image_path")
    if not path:
        raise ValueError(f"pair {row.get('idx')!r} has neither image bytes nor an image path")
    resolved = Path(path)
    if data_root is not None:
        root = Path(data_root).resolve()
        resolved = (root / path).resolve()
        if root not in resolved.parents and resolved != root:
            raise ValueError(f"image path {path!r} leaves data_root {root}")
    return resolved.read_bytes()


def pair_keys(pairs: pd.DataFrame, data_root: str | None = None) -> list[str]:
    """A content key per pair (image bytes, question, chosen, rejected): aligns cached reference
    log-probs with the pairs they were computed for."""
    keys = []
    for row in pairs.to_dict("records"):
        digest = hashlib.sha256(hashlib.sha256(image_bytes(row, data_root)).digest())
        for text in (row["question"], row["chosen"], row["rejected"]):
            digest.update(b"\0" + str(text).encode())
        keys.append(digest.hexdigest()[:24])
    return keys


def to_trl_dataset(pairs: pd.DataFrame, *, data_root: str | None = None, ref_logps: pd.DataFrame | None = None):
    """TRL's conversational vision rows: `prompt` (user turn with the question; TRL inserts the
    image placeholder), `chosen`/`rejected` (assistant turns) and `images` ([image], decoded lazily).
    With `ref_logps` (from `compute_reference_logps`, same pairs) the rows also carry
    `ref_chosen_logps`/`ref_rejected_logps`."""
    import datasets

    check_pair_columns(pairs)
    message = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    columns: dict[str, Any] = {
        "prompt": [[{"role": "user", "content": str(q)}] for q in pairs["question"]],
        "chosen": [[{"role": "assistant", "content": str(a)}] for a in pairs["chosen"]],
        "rejected": [[{"role": "assistant", "content": str(a)}] for a in pairs["rejected"]],
        "images": [[{"bytes": image_bytes(row, data_root), "path": None}] for row in pairs.to_dict("records")],
    }
    features = {"prompt": message, "chosen": message, "rejected": message,
                "images": datasets.List(datasets.Image())}
    if ref_logps is not None:
        check_reference_alignment(pairs, ref_logps, data_root=data_root)
        for column in REF_COLUMNS:
            columns[column] = [float(v) for v in ref_logps[column]]
            features[column] = datasets.Value("float64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def check_reference_alignment(pairs: pd.DataFrame, ref_logps: pd.DataFrame, data_root: str | None = None) -> None:
    """Cached reference log-probs must be for exactly these pairs, in this order."""
    if len(ref_logps) != len(pairs):
        raise ValueError(f"reference log-probs have {len(ref_logps)} rows for {len(pairs)} pairs")
    if "pair_key" in ref_logps.columns and list(ref_logps["pair_key"]) != pair_keys(pairs, data_root):
        raise ValueError("reference log-probs were computed for other pairs (pair_key mismatch)")


def load_pairs_table(path: str) -> pd.DataFrame:
    import fsspec

    with fsspec.open(path, "rb") as handle:
        return pd.read_parquet(io.BytesIO(handle.read()))
