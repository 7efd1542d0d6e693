"""The web app: a Gradio UI over the run queue, galleries, exploring and export (no unlearning code here)."""
