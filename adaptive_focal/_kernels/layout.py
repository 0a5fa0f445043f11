"""The statistics accumulator of the kernel contract: its length and where its confidence bins start (the layout
is documented in ``adaptive_focal/_kernels/__init__.py``)."""

from __future__ import annotations


def conf_offset(num_classes: int, num_bins: int) -> int:
    """Index of ``conf_count[0]``: the confidence bins follow the p_t statistics."""
    return 6 + num_bins + 4 * num_classes


def acc_len(num_classes: int, num_bins: int, confidence: bool) -> int:
    """Length of the float64 accumulator for C classes and B bins, with the confidence bins (``need_conf``) or
    without them (it then ends at ``conf_offset``)."""
    conf = 3 * num_bins + 3 * num_classes * num_bins if confidence else 0
    return conf_offset(num_classes, num_bins) + conf
