"""Synthetic old-photo degradations (filled in by the degradations work)."""
