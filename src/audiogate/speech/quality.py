"""Enrolment quality: what is wrong with a voice's enrolment clips, found before it is saved.

Three checks per voice, and what the gate will do with it (:class:`VoiceCheck`):

* **no speech**: clips in which the VAD found no voice (left out of the enrolment);
* **outliers**: clips far from the rest of the voice (another person, a bad recording).
  Each enrolled clip's cosine similarity to the centroid of the voice's *other* clips is
  compared with the voice's own spread: a clip whose similarity lies more than
  :data:`OUTLIER_Z` robust standard deviations (1.4826 x the median absolute deviation)
  below the median is flagged: Iglewicz and Hoaglin's modified z-score rule ("How to Detect
  and Handle Outliers", 1993). On recorded speech (30 people, 60 one-second words each;
  ``python -m bench.voice_real``) it flags 0.6% of clean clips and 87% of clips of another
  person slipped into an enrolment;
* **too little speech**: under :data:`MIN_SPEECH_S` seconds of speech in all. On the same
  data a voice's equal error rate against people never heard falls as its enrolled speech
  grows, and stops falling at about 5 s (0.155 from one 0.6 s word, 0.119 from 3.2 s, 0.110
  from 5 s, 0.103 from 38 s; ``bench.voice_real`` at commit ``11d06fb``);

and the **expected false-reject rate** of the voice: the fraction of its enrolled clips that
the gate's threshold rejects when each is scored with itself left out of the voice
(:meth:`~audiogate.speech.scoring.VoiceScorer.leave_one_out`), as a new recording of that
person would be. It is optimistic: an enrolled clip has its own session's other clips in the
voice, a new recording does not. On the benchmark it was 0.40 where the people's test clips
were rejected at 0.60 (far=0.02; correlation 0.66 across people): read it as a lower bound,
and to compare voices. Pure functions of arrays; nothing is refused: the checks are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .snorm import unit

OUTLIER_Z = 3.5
"""Robust standard deviations below the voice's median similarity that flag a clip."""
MIN_OUTLIER_CLIPS = 5
"""Fewest enrolled clips whose spread the outlier rule trusts (a median and a deviation of
fewer say little)."""
MAD_FLOOR = 0.01
"""Smallest robust deviation (cosine units) the outlier rule divides by: near-identical
clips would otherwise flag any small difference. Observed deviations are 0.02-0.05."""
MIN_SPEECH_S = 5.0
"""Seconds of speech (VAD) in a voice's enrolment below which it is reported as too little
(see the module docstring)."""


def leave_one_out_similarity(vectors: np.ndarray) -> np.ndarray:
    """Each clip's cosine similarity to the centroid of the other clips ``[shape=(n,)]``
    (empty for fewer than 2 clips)."""
    v = unit(vectors)
    if len(v) < 2:
        return np.zeros(0)
    rest = unit(v.sum(axis=0)[None, :] - v)
    out: np.ndarray = np.einsum("ij,ij->i", v, rest)
    return out


def outliers(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The leave-one-out similarities ``[shape=(n,)]`` of a voice's clips and which are
    outliers (bool ``[shape=(n,)]``; none with fewer than :data:`MIN_OUTLIER_CLIPS`)."""
    sims = leave_one_out_similarity(vectors)
    if len(sims) < MIN_OUTLIER_CLIPS:
        return sims, np.zeros(len(sims), bool)
    median = float(np.median(sims))
    spread = max(1.4826 * float(np.median(np.abs(sims - median))), MAD_FLOOR)
    return sims, (median - sims) / spread > OUTLIER_Z


@dataclass(frozen=True)
class VoiceCheck:
    """One voice's enrolment checks (see the module docstring). ``outliers``: ``(source,
    similarity)``; ``expected_frr`` is None with fewer than 2 clips or without a threshold."""

    name: str
    clips: int
    speech_s: float
    no_speech: tuple[str, ...] = ()
    outliers: tuple[tuple[str, float], ...] = ()
    median_similarity: float | None = None
    expected_frr: float | None = None
    threshold: float | None = None

    @property
    def too_little_speech(self) -> bool:
        return self.speech_s < MIN_SPEECH_S

    def problems(self) -> list[str]:
        """One line per problem found, for people (empty: none)."""
        out = []
        if self.no_speech:
            out.append(f"{len(self.no_speech)} clip(s) hold no speech and are not enrolled: "
                       + ", ".join(self.no_speech[:5]) + (" ..." if len(self.no_speech) > 5
                                                          else ""))
        if self.outliers:
            out.append(f"{len(self.outliers)} clip(s) far from the rest of the voice (another "
                       f"person or a bad recording?): " + ", ".join(
                           f"{s} (similarity {x:.2f}, the voice's median "
                           f"{self.median_similarity:.2f})" for s, x in self.outliers[:5]))
        if self.too_little_speech:
            out.append(f"{self.speech_s:.1f} s of speech in all, under {MIN_SPEECH_S:g} s: "
                       "such a voice is rejected more often; enrol more recordings")
        return out

    def summary(self) -> str:
        """One line: clips, speech, expected FRR."""
        frr = ("n/a (one clip)" if self.expected_frr is None else
               f"{self.expected_frr:.2f} at threshold {self.threshold:.4f}")
        return (f"voice {self.name!r}: {self.clips} clip(s), {self.speech_s:.1f} s of speech; "
                f"expected false-reject rate {frr}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "clips": self.clips, "speech_s": self.speech_s,
                "no_speech": list(self.no_speech),
                "outliers": [{"source": s, "similarity": x} for s, x in self.outliers],
                "median_similarity": self.median_similarity,
                "too_little_speech": self.too_little_speech, "min_speech_s": MIN_SPEECH_S,
                "expected_frr": self.expected_frr, "threshold": self.threshold,
                "problems": self.problems()}


def check_voice(*, name: str, vectors: np.ndarray, sources: Sequence[str],
                speech_s: np.ndarray, no_speech: Sequence[str] = (),
                genuine: np.ndarray | None = None,
                threshold: float | None = None) -> VoiceCheck:
    """The checks of voice ``name`` enrolled from ``vectors`` ``[shape=(n, d)]`` (clips
    ``sources``, each with ``speech_s`` seconds of speech); ``no_speech``: the sources left out
    for holding none; ``genuine``: its clips' leave-one-out gate scores, judged against
    ``threshold``."""
    sims, flagged = outliers(vectors)
    frr = None
    if genuine is not None and len(genuine) and threshold is not None:
        frr = float(np.mean(np.asarray(genuine) < threshold))
    return VoiceCheck(
        name=name, clips=len(vectors), speech_s=float(np.sum(speech_s)),
        no_speech=tuple(no_speech),
        outliers=tuple((sources[int(i)], float(sims[i])) for i in np.flatnonzero(flagged)),
        median_similarity=float(np.median(sims)) if len(sims) else None,
        expected_frr=frr, threshold=threshold)
