"""Evaluator networks of the synthetic-domain evaluator kit, trained on the synthetic corpus as ordinary registered
models: the official metric networks (SyncNet, FAN, ArcFace) neither apply to nor can be downloaded for it."""
