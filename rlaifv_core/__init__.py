"""rlaifv_core: the science of RLAIF-V, as plain Python on torch/transformers/TRL (never Prefect).

    from rlaifv_core.config import load_config
    config = load_config("configs/shapes.yaml", ["sampling.n=4"])

Foundation (import nothing above them): config, store, images, seeds, fingerprints, plugins.
Then backends/ (a leaf: model servers behind one interface), models/ (role → backend), feedback/
(prompts, sampling, claims, questions, judge, pairs), training/ (reference log-probs and DPO),
evals/ (benchmarks), and selection, rewards, summary, chat on top. shapes/ is a plug-in that only
imports the core. docs/method.md describes the method as implemented.
"""
