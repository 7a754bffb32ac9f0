"""StyleTalk (Ma et al., AAAI 2023): one-shot talking heads with a speaking style taken from a reference clip.

Its stages register with :mod:`zoo.registry` when they land; see the README's roadmap.
"""
