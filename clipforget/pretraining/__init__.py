"""Recipes that build the bundled models (``python -m clipforget pretrain NAME``); nothing below imports them."""
