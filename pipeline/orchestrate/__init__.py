"""Orchestrate: the stages chained (``workflow``: ``medssl run``, the weekly DAG's tasks) and the dated
batches the scheduler runs (``schedule``)."""
