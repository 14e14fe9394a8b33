"""Measure the paper's argument: how an LSTM's gradient splits into cell path and h path.

    from hdetach.analysis import gradient_paths, gradient_profiles
    paths = gradient_paths(model, lambda: loss_of(model(x), y))
    paths.summary()["groups"]["lstm"]  # norms, ||hidden|| / ||cell||, cosines

Works on any model holding ``hdetach.LSTM`` / ``hdetach.LSTMCell`` modules (for example
one made by ``hdetach.convert``). See docs/gradient-analysis.md.
"""

from hdetach.analysis.paths import GradientPaths, PathNorms, forced_h_detach, gradient_paths
from hdetach.analysis.profiles import GradientProfiles, gradient_profiles

__all__ = [
    "GradientPaths",
    "GradientProfiles",
    "PathNorms",
    "forced_h_detach",
    "gradient_paths",
    "gradient_profiles",
]
