"""Voice gate building blocks: a pretrained speaker encoder, voice activity detection, cached
clip embeddings and enrolled-voice scoring. Needs the ``voice`` extra
(``pip install 'audiogate[voice]'``) for the model files; nothing is downloaded.

* :mod:`.encoder`: the GE2E speaker encoder (resemblyzer's weights), waveform -> embedding;
* :mod:`.export`: its ONNX export, checked against PyTorch, and an onnxruntime runner;
* :mod:`.vad`: Silero voice activity detection (ONNX), offline and streaming;
* :mod:`.embeddings`: clips -> embeddings in worker processes, with an on-disk cache;
* :mod:`.gate`: :class:`VoiceProfile`, enrolled voices and top-k cosine scoring.
"""

from .embeddings import (
    EmbeddedClips,
    Embedder,
    EmbeddingCache,
    Embeddings,
    EmbedSettings,
    EmbedSpec,
    embed_clips,
)
from .encoder import EncoderSettings, SpeakerEncoder, embed_utterances, load_encoder
from .profile import VoiceProfile
from .vad import SileroVad, VadSettings, VadStream, speech_segments, trim_silence

__all__ = [
    "EmbedSettings", "EmbedSpec", "EmbeddedClips", "Embedder", "EmbeddingCache", "Embeddings",
    "EncoderSettings", "SileroVad", "SpeakerEncoder", "VadSettings", "VadStream",
    "VoiceProfile", "embed_clips", "embed_utterances", "load_encoder", "speech_segments",
    "trim_silence",
]
