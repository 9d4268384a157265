"""Self-contained HTML report with interactive maps."""
