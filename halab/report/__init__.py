"""Writing what happened: scenario and comparison reports."""
