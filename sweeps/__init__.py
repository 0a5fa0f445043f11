"""Optuna studies comparing gamma policies, fixed gammas and imbalance baselines (see README.md)."""
