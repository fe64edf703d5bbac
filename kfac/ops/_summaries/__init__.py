"""Summaries, health report and hook of K-FAC optimizers (`kfac.summaries`)."""
