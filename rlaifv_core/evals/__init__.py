"""Benchmarks run on every checkpoint, behind one entry point (`registry.run_benchmark`).

    from rlaifv_core.evals.registry import run_benchmark
    record = run_benchmark("object_halbench", policy_backend, config.eval, judge=judge_backend)

Object HalBench (object_halbench.py, with the COCO extractor in coco.py and its tables in
coco_classes.py), MMHal-Bench (mmhal.py), RefoMB (refomb.py) and AMBER (amber.py) read user-supplied
data (external.py maps `eval.data` to them); common.py holds what they share and judge.py the
cached LLM-judge client. Plug-ins add benchmarks of their own (the shapes world adds `shapes`).
"""
