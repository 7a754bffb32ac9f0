"""The embedded synthetic talking-head corpus: a deterministic generator of learnable, exactly labelled clips.

Audio really drives the mouth, head motion really follows prosody and a personal rhythm, and speaking styles
are really distinguishable; see the module docstrings for each part:

- :mod:`zoo.synth.script`      random sentence-like phoneme sequences with phrases, pauses and pitch accents
- :mod:`zoo.synth.audio`       source-filter speech synthesis (16 kHz)
- :mod:`zoo.synth.face_model`  68-landmark linear morphable model (identity basis)
- :mod:`zoo.synth.expression`  64-d expression basis (13 mouth dims + 51 style dims)
- :mod:`zoo.synth.visemes`     phonemes -> mouth coefficients with coarticulation
- :mod:`zoo.synth.styles`      speaking styles, blinks, the full expression track
- :mod:`zoo.synth.head_motion` head pose from prosody and personal rhythm
- :mod:`zoo.synth.camera`      pinhole camera, pose conventions, shoulder billboard
- :mod:`zoo.synth.render`      OpenCV anti-aliased renderer
- :mod:`zoo.synth.corpus`      clip generation, splits, writing through zoo.data.clip_format
"""
from zoo.synth.config import SynthConfig, config_hash
from zoo.synth.corpus import build_corpus, clip_plan, default_root, generate_clip

__all__ = ["SynthConfig", "build_corpus", "config_hash", "generate_clip", "clip_plan", "default_root"]
