"""The persona domain (RustyWorm's convergence task): profiles and models, behaviour generators, analysis,
the harness, estimators, and the apply_delta format the served model reads and writes."""
