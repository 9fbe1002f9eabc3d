"""Safety measurements of a run: what generated code tried, and how improvers work."""
