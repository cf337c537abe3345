"""The AI-feedback half of an iteration: prompts → samples → claims → yes/no questions → verdicts → pairs.

    import rlaifv_core.feedback.sampling as sampling      # sample_candidates(policy, prompts, config.sampling)
    from rlaifv_core.feedback.claims import split_claims
    from rlaifv_core.feedback.questions import rewrite_questions
    from rlaifv_core.feedback.judge import judge_candidates
    from rlaifv_core.feedback.pairs import build_pairs

One module per stage (prompts, sampling, claims, questions, judge, pairs), plus what the text stages
share: grammar.py (the rule-based paths' English), claim_rules.py (the rule-based splitter),
llm_lists.py (reading a list out of a model's reply) and text_roles.py (rules or a model for a text
role). Importing the package loads nothing heavy; each module imports pandas or spaCy itself.
"""
