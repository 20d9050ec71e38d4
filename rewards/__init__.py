"""Reward sources: rule-based milestone detectors (and, later, the learned reward model and the judge)."""
