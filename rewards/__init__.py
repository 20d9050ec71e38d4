"""Rewards: the milestone detectors and tracker, the reward router and its layers (R_phi, the LLM judge), the preference store."""
