"""Talking-head generation with rhythmic head motion (Chen et al., ECCV 2020).

Its stages register with :mod:`zoo.registry` when they land; see the README's roadmap.
"""
