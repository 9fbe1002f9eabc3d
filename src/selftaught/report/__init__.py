"""What a recorded run looks like: plots and summaries."""
