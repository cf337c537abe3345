"""Command-line plumbing shared by the flow scripts: `--config FILE` and `section.field=value` overrides."""

from __future__ import annotations

import argparse

from rlaifv_core.config import RunConfig, load_config


def parse_config(description: str, argv: list[str] | None = None, extra=None) -> tuple[RunConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML config (default: configs/shapes.yaml)")
    if extra:
        extra(parser)
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. sampling.n=4 dpo.beta=0.2")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides), args
