"""Synthetic data, generated deterministically from a seed and anchored on the real retail data.

Nothing here is real: it exists because the retail data has no devices, sessions or anonymous visitors.
"""
