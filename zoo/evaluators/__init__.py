"""Evaluator networks of the synthetic-domain evaluator kit, trained on the synthetic corpus as ordinary registered
models: the official metric networks (SyncNet, FAN, ArcFace) neither apply to nor can be downloaded for it.

``landmark_detector`` (LMD), ``identity_embedder`` (CSIM, and FD features) and ``syncnet`` (LSE-C / LSE-D);
:mod:`zoo.evaluators.kit` bundles them per corpus version.
"""
from zoo.evaluators import identity_embedder, landmark_detector, sync_expert  # noqa: F401  (registration)
