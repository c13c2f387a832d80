"""Getting finished clips to the user: verified downloads, poster frames, contact sheets, webhooks.

Downloads and webhooks are background observers of the runner's events; nothing here drives a run.
"""
