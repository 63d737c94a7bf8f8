"""Probabilistic and machine-learned customer models."""
