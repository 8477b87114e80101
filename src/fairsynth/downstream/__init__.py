"""Downstream proof: train a classifier on real, synthetic and mixed data and measure accuracy and fairness per group."""
