"""Live Speech Portraits (Lu et al., SIGGRAPH Asia 2021): person-specific, real-time audio-driven portraits.

Registered models: ``lsp`` (the assembled model; ``zoo fit --model lsp`` trains every stage in order) and its
stages ``lsp.apc``, ``lsp.mouth``, ``lsp.headpose``, ``lsp.renderer``.
"""
from lsp.model import LSP, LSPConfig
from lsp.stages.apc import APCConfig, APCStage
from lsp.stages.headpose import HeadposeConfig, HeadposeStage
from lsp.stages.mouth import MouthConfig, MouthStage
from lsp.stages.renderer import RendererConfig, RendererStage
from zoo.registry import register_model


@register_model("lsp", config=LSPConfig, help="Live Speech Portraits: audio -> mouth + sampled head pose -> video")
def lsp(cfg: LSPConfig) -> LSP:
    return LSP(cfg)


@register_model("lsp.apc", config=APCConfig, help="LSP stage 1: APC speech representation (3-layer GRU, L1 n=3 ahead)")
def lsp_apc(cfg: APCConfig) -> APCStage:
    return APCStage(cfg)


@register_model("lsp.mouth", config=MouthConfig, help="LSP stage 3: APC -> 25 mouth points (LSTM, 300 ms look-ahead)")
def lsp_mouth(cfg: MouthConfig) -> MouthStage:
    return MouthStage(cfg)


@register_model("lsp.headpose", config=HeadposeConfig, help="LSP stage 4: probabilistic head pose (WaveNet, Gaussian NLL)")
def lsp_headpose(cfg: HeadposeConfig) -> HeadposeStage:
    return HeadposeStage(cfg)


@register_model("lsp.renderer", config=RendererConfig, help="LSP stage 6: edge map + 4 candidates -> frame (ResUNet GAN)")
def lsp_renderer(cfg: RendererConfig) -> RendererStage:
    return RendererStage(cfg)
