"""Retrieval: the gallery index format, text -> image search and comparisons, alpha-grid reading, audits."""
