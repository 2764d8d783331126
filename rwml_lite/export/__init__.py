"""Exports of a run for other trainers: verl.py (`rwml-lite export verl`)."""
