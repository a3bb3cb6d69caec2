"""Client-level differential privacy: clipping, noise, the accountant, calibration, released signals.

Layer: beside ``methods/`` (it imports only the ground floor and ``ops``); the ``dp`` stage
(``methods/dp.py``) uses it. The maths and its sources are in each module's docstring; the user's guide
is docs/privacy.md.

    accountant   epsilon at delta after each round (Google's dp-accounting, RDP), joint multipliers
    calibration  the update's noise multiplier for a target epsilon
    clipping     fixed and adaptive (quantile) clipping of a client's update
    noise        Gaussian noise and its placement (central, distributed, local)
    sensitivity  each released signal's bound, sensitivity and private form
"""

from livar_bench.privacy.accountant import (
    PrivacyModel,
    check_delta,
    check_multiplier,
    epsilon,
    epsilons,
    joint_multiplier,
)
from livar_bench.privacy.calibration import calibrate_sigma, joint_with
from livar_bench.privacy.clipping import QuantileClip, check_bound, clip_params, clip_vector, delta_norm
from livar_bench.privacy.noise import PLACEMENTS, add_noise, gaussian_like, share_std
from livar_bench.privacy.sensitivity import (
    Release,
    class_stats_parts,
    privatise_class_stats,
    privatise_lora_signal,
)

__all__ = [
    "PLACEMENTS", "PrivacyModel", "QuantileClip", "Release", "add_noise", "calibrate_sigma", "check_bound",
    "check_delta", "check_multiplier", "class_stats_parts", "clip_params", "clip_vector", "delta_norm", "epsilon",
    "epsilons", "gaussian_like", "joint_multiplier", "joint_with", "privatise_class_stats", "privatise_lora_signal",
    "share_std",
]
