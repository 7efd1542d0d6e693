"""The bottom layer: paths, atomic files, errors, progress and device choice. Imports nothing else of clipforget."""
