"""`aico dev`: the whole stack on one machine (main.py), with a local Slack console (console.py)."""
