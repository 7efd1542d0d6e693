"""Builds the artefacts clipforget serves: FAISS gallery indexes (reader -> encoder -> writer) and alpha grids."""
