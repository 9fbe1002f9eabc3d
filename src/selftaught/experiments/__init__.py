"""The paper's experiments, run on any language model: each one a recorded run."""
