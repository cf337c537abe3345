"""Shared pieces of the reliability catalogue: one Prefect test server for the package, prompt files
with bad rows, a cheap decompression-bomb PNG, helpers to read counts artifacts and stage logs."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import zlib
from pathlib import Path

import pytest

from rlaifv_core.config import load_config
from rlaifv_core.shapes.world import ShapesWorld

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def prefect_api():
    """One Prefect test server (temporary SQLite database) for every flow test of the package; yields
    its API URL, which subprocess flows get as PREFECT_API_URL so they skip their own server start."""
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield prefect.settings.PREFECT_API_URL.value()


def png_bytes(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    ShapesWorld().scene(seed).render().save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG *header* claiming width x height pixels (plus one tiny IDAT and IEND): a few dozen
    bytes, so the test never allocates the 400 M pixels a decoder would."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    comment = chunk(b"tEXt", b"Comment\0" + b"x" * 64)  # long enough that its base64 is not read as a path
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + comment + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def good_records(k: int, start: int = 0) -> list[dict]:
    """k usable prompts in the original format (base64 image, question, ds_question_id)."""
    return [{"ds_question_id": f"q{start + i}", "image": b64(png_bytes(start + i)), "question": "describe the image ."}
            for i in range(k)]


def tiny_overrides(store: Path, model_dir: Path, *more: str, run: str = "t") -> list[str]:
    """The smallest generate/iterate settings that still make pairs (a random labeler's P(yes)/(P(yes)+P(no))
    sits just above 0.5, so a threshold of 0.508 splits its verdicts) and train DPO for two steps."""
    return [f"store.url={store}", f"store.run_name={run}", "iteration.iterations=1", "prompts.per_iteration=4",
            "sampling.n=4", "sampling.max_new_tokens=8", "sampling.shard_size=2", "dpo.batch_size=2",
            "dpo.checkpoints_per_epoch=2", f"models.policy.name_or_path={model_dir}",
            f"models.labeler.name_or_path={model_dir}", "pairs.builder=paper", "pairs.length_balance=false",
            "eval.shapes_scenes=4", "eval.max_new_tokens=8", "iteration.retries=0", "iteration.retry_delay_s=0",
            "judge.threshold=0.508", *more]


def tiny_config(store: Path, model_dir: Path, *more: str, run: str = "t"):
    return load_config(ROOT / "configs" / "shapes.yaml", tiny_overrides(store, model_dir, *more, run=run))


async def every_record(read) -> list:
    """All records of a Prefect client read (`client.read_logs`, …), page by page: the API returns at
    most PREFECT_API_DEFAULT_LIMIT (200) per call, and the package's shared server holds more by the
    end of the suite (a leak in the 201st log line must not pass unseen)."""
    found = []
    while page := await read(offset=len(found), limit=200):
        found += page
    return found


def read_artifacts() -> list:
    """Every artifact on the current Prefect API (latest versions and history)."""
    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            return await every_record(client.read_artifacts)

    return asyncio.run(fetch())


def counts_artifact(key: str) -> dict[str, str]:
    """The newest counts table artifact with this key, as {count name: value}."""
    matching = [a for a in read_artifacts() if a.key == key]
    assert matching, f"no artifact {key!r}"
    newest = max(matching, key=lambda a: a.created)
    rows = json.loads(newest.data) if isinstance(newest.data, str) else newest.data
    return {row["count"]: row["value"] for row in rows}


def shapes_pairs(k: int = 4):
    """k preference pairs in the pairs schema (shapes-world images, a true and a noisy caption)."""
    import random

    import pandas as pd

    world, rng = ShapesWorld(), random.Random(0)
    rows = []
    for i in range(k):
        scene = world.scene(100 + i)
        chosen = world.caption(scene)
        rejected = world.caption(scene, rng, noisy=True)
        if rejected == chosen:
            rejected = chosen.replace(" .", " and a red circle .", 1)
        rows.append({"image": {"bytes": png_bytes(100 + i), "path": None}, "question": "describe the image .",
                     "chosen": chosen, "rejected": rejected})
    return pd.DataFrame(rows)


def moto_server(port: int):
    """An in-process S3 (moto) on 127.0.0.1:port; its buckets live in this process, so a server
    stopped and started again on the same port still has them."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


