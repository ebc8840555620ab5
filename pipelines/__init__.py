"""Offline half: one module per DVC stage (validate, preprocess, train, evaluate) + shared parts."""
