"""Audit preference pairs of the shapes world against the truth (which feedback never saw).

    python -m rlaifv_core.shapes.pair_audit runs/shapes/iter-1/pairs.parquet [more.parquet ...]

For every pair, and per pair kind: true hallucinated objects of chosen vs rejected (read off the
image's pixels), and the labeler's claim-level precision/recall on the claims recorded with the pair.
Prints both. (An `omission` anchor differs by a *true* object, so its two sides hallucinate equally
by design; the default `omission_swap` anchor's rejected side also names a rejected object.)
"""

from __future__ import annotations

import argparse
import io
import json
import sys

import pandas as pd
from PIL import Image

from .benchmark import mentioned_objects, positive_mentions
from .oracle import objects_in_image


def hallucinated(text: str, truth) -> int:
    return sum(1 for obj in positive_mentions(text) if obj not in truth)


def audit_pairs(pairs: pd.DataFrame) -> dict:
    better = worse = same = 0
    tp = fp = fn = tn = 0
    for row in pairs.itertuples():
        image = row.image["bytes"] if isinstance(row.image, dict) else row.image
        truth = objects_in_image(Image.open(io.BytesIO(image)))
        chosen, rejected = hallucinated(row.chosen, truth), hallucinated(row.rejected, truth)
        better += chosen < rejected
        worse += chosen > rejected
        same += chosen == rejected
        for claims, verdicts in ((row.chosen_claims, row.chosen_verdicts), (row.rejected_claims, row.rejected_verdicts)):
            for claim, verdict in zip(claims, json.loads(verdicts)):
                mentions = mentioned_objects(claim)
                if not mentions:
                    continue
                obj, negated = mentions[0]
                true = (obj in truth) != negated
                accepted = verdict["accepted"]
                tp += true and accepted
                fp += (not true) and accepted
                fn += true and not accepted
                tn += (not true) and not accepted
    n = max(len(pairs), 1)
    return {"pairs": len(pairs), "chosen_fewer_hallucinations": better / n, "chosen_more_hallucinations": worse / n,
            "same": same / n, "labeler_claim_precision": tp / max(tp + fp, 1),
            "labeler_claim_recall": tp / max(tp + fn, 1), "claims_audited": tp + fp + fn + tn}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="pairs parquet file(s) written by the generate flow")
    args = parser.parse_args(argv)
    frame = pd.concat([pd.read_parquet(p) for p in args.pairs], ignore_index=True)
    report = audit_pairs(frame)
    report["by_kind"] = {kind: audit_pairs(part) for kind, part in frame.groupby("pair_kind")}
    for kind, part in report["by_kind"].items():
        print(f"[{kind}] {part['pairs']} pairs: chosen fewer {part['chosen_fewer_hallucinations']:.1%}, "
              f"more {part['chosen_more_hallucinations']:.1%}, same {part['same']:.1%}")
    print(f"all pairs: {report['pairs']}")
    print(f"chosen has fewer true hallucinated objects than rejected: {report['chosen_fewer_hallucinations']:.1%}")
    print(f"chosen has more:                                          {report['chosen_more_hallucinations']:.1%}")
    print(f"same number:                                              {report['same']:.1%}")
    print(f"labeler claim-level precision {report['labeler_claim_precision']:.3f}, recall "
          f"{report['labeler_claim_recall']:.3f} ({report['claims_audited']} claims)")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
