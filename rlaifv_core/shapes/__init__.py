"""The shapes world: synthetic scenes with exact ground truth and tiny LLaVA-architecture models.

    python -m rlaifv_core.shapes.report                 # bootstrap (or find) the models, print the start
    python -m rlaifv_core.shapes.pair_audit runs/shapes/iter-*/pairs.parquet

A plug-in of the pipeline (plugin.py registers it through the `rlaifv_flows.plugins` entry point);
nothing outside this package imports it. world.py draws and renders scenes, models.py builds the
tiny policy/labeler architecture and tokenizer, bootstrap.py trains them once (cached),
prompts.py is its prompt source, benchmark.py its exact CHAIR benchmark, oracle.py a ground-truth
labeler, pair_builders.py its list-grammar pair builder, pair_audit.py and report.py check pairs and
the starting point against the truth.
"""
