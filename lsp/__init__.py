"""Live Speech Portraits (Lu et al., SIGGRAPH Asia 2021): person-specific, real-time audio-driven portraits.

Stages register with the zoo as ``lsp.<stage>``. Landed so far: ``lsp.apc`` (the APC speech representation).
"""
from zoo.registry import register_model

from lsp.stages.apc import APCConfig, APCStage


@register_model("lsp.apc", config=APCConfig, help="LSP stage 1: APC speech representation (3-layer GRU, L1 n=3 ahead)")
def lsp_apc(cfg: APCConfig) -> APCStage:
    return APCStage(cfg)
