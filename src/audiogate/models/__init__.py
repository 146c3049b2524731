"""Models: a registry of networks by name, and the deployable waveform classifier.

* :mod:`.registry`: ``register_model`` / :class:`ModelSpec` (name + constructor arguments);
* :mod:`.simple`: the specification's ``SimpleConvNet`` (``model = "simple"``);
* :mod:`.tcresnet`: TC-ResNet (Choi et al., 2019), 1-D temporal convolutions, the fastest on
  a CPU, any number of frames (``"tcresnet"``);
* :mod:`.bcresnet`: BC-ResNet (Kim et al., 2021), compact, any input size (``"bcresnet"``);
* :mod:`.waveform`: :class:`WaveformClassifier`, front end + network;
* :mod:`.dropout`: :class:`ClipDropout`, dropout with one mask per clip, from the clip's seed.

A new network is one new module here with a ``@register_model("name")`` class, imported below.
"""

from .bcresnet import BCResNet
from .registry import ModelSpec, model_names, register_model
from .simple import SimpleConvNet
from .tcresnet import TCResNet
from .waveform import WaveformClassifier

__all__ = [
           "BCResNet",
           "ModelSpec",
           "SimpleConvNet",
           "TCResNet",
           "WaveformClassifier",
           "model_names",
           "register_model",
]
