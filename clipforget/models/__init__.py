"""Models: the factory (``create_model``), encoding, adaptable layers and weight-space arithmetic (the soup)."""
