"""Features: the log-mel front end (pure computation on arrays) and training augmentation.

* :mod:`.frontend`: waveform -> normalised log-mel, in torch, batched;
* :mod:`.augment`: additive noise, pitch shift and time stretch for training batches;
* :mod:`.dft`: the same front end as a convolution with a DFT basis, for ONNX export.
"""

from .frontend import LogMel, fit_length, log_mel

__all__ = ["LogMel", "fit_length", "log_mel"]
