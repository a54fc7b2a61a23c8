"""Models the engines and learners load: the tiny test model, its corpus, and model-path resolution."""
