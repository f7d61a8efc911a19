"""Trends over closed windows: top-K hashtags (exact per window, sketched across windows) and surge scores."""
