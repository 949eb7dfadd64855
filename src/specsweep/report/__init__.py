"""Reports people read: W&B runs and report spec, a static HTML report, forum-ready markdown.

Only the modules named `wandb*.py` here import wandb or wandb_workspaces, so the rest of the
project (and the HTML/markdown reports) work where W&B is not installed or not wanted.
"""
