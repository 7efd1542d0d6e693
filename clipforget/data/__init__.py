"""Data layer: images at model size, the datasets of the data root, styles, prompts and the unlearning task."""
