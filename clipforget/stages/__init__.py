"""The paper's three stages, one module each: forget, remind, restore; each a function over (model, task, config)."""
