"""Builders of artefacts that clipforget serves: the embedded model's weights and FAISS gallery indexes."""
