# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # audiogate walkthrough
#
# The specification's notebook, section by section, with the library API. Run it as a
# script (`python notebooks/walkthrough.py`) or open it with jupytext. It uses the generated
# demo data set so it runs anywhere; point `DATA` at your own `dataset/` to use real clips.
# `AUDIOGATE_WALKTHROUGH_SMALL=1` makes it tiny (used by the test suite).

# %%
import os
from pathlib import Path

import numpy as np

import audiogate
from audiogate.config import Config
from audiogate.data import discover
from audiogate.data.audio_io import load_audio
from audiogate.data.split import balance, stratified_split
from audiogate.data.synth import make_demo_dataset
from audiogate.features.augment import AddNoise, PitchShift, TimeStretch
from audiogate.features.frontend import log_mel
from audiogate.gates import evaluate, train
from audiogate.reporting import plots
from audiogate.reporting.eda import analyse, write_eda

SMALL = os.environ.get("AUDIOGATE_WALKTHROUGH_SMALL") == "1"
WORK = Path(os.environ.get("AUDIOGATE_WALKTHROUGH_DIR", "walkthrough"))
DATA = WORK / "dataset"

# %% [markdown]
# ## 3. Configuration
# One frozen dataclass; the first fields are the specification's `Args`.

# %%
args = Config(data=str(DATA), runs_dir=str(WORK / "runs"), name="walkthrough",
              max_epochs=2 if SMALL else 10, patience=0,
              fixed_length=64 if SMALL else 200, batch_size=16 if SMALL else 32)
print(args.to_toml())

# %% [markdown]
# ## 4. Dataset handling: discovery and class balancing

# %%
make_demo_dataset(root=DATA, n_per_class=20 if SMALL else 120, seed=0)
found = discover(args.data)
print("classes (label order):", found.classes, "counts:", found.counts())
balanced = balance(found.clips, strategy="downsample", rng=np.random.default_rng(args.seed))
print("after down-sampling:", len(balanced), "clips")

# %% [markdown]
# ## 5. EDA: the duration histogram that justifies `fixed_length`

# %%
report = analyse(args.data, features=args.features())
paths = write_eda(report, WORK / "eda")
print(report.summary())
print("histogram:", paths["histogram"])

# %% [markdown]
# ## 6. Preprocessing: load + resample, log-mel (power_to_db ref=max), per-sample z-score

# %%
y = load_audio(found.clips[0].path, sr=args.sr)
S = log_mel(y, cfg=args.features())
print("waveform", y.shape, "-> log-mel", S.shape, f"mean {S.mean():.3f} std {S.std():.3f}")
plots.plot_spectrogram(S, WORK / "example_logmel.png", hop_s=args.hop_length / args.sr,
                       title=Path(found.clips[0].path).name)

# %% [markdown]
# ## 7. Augmentation (training only): noise, pitch shift, time stretch
# Each transform draws its parameters from an explicit generator; see `audiogate.features.augment`.

# %%
rng = np.random.default_rng(0)
for transform in (AddNoise(p=1.0), PitchShift(p=1.0), TimeStretch(p=1.0)):
    print(type(transform).__name__, transform.draw(rng, 4))

# %% [markdown]
# ## 8. Stratified train / validation / test split

# %%
split = stratified_split(balanced, test_size=args.test_size, val_size=args.val_size,
                         seed=args.seed)
print({k: len(getattr(split, k)) for k in ("train", "val", "test")})

# %% [markdown]
# ## 9-13. Model, optimisation, training loop, evaluation, outputs
# `train` does all of it: SimpleConvNet, Adam + weight decay, cross entropy; loss and
# train/val/test macro-F1 per epoch; a checkpoint per epoch plus best (on validation) and
# last; curves in `outputs/`. Ctrl+C stops it safely; `max_epochs=0` runs until Ctrl+C.

# %%
result = train(args, progress=False)
print("best epoch", result.best_epoch, "val macro-F1", round(result.best_val_f1, 3))
print("curves:", result.run.curves)

# %% [markdown]
# ## 12. Evaluation of the best checkpoint on the held-out test split

# %%
evaluation = evaluate(result.run.best, progress=False)
print("test macro-F1", round(evaluation.report["macro_f1"], 3))
print("confusion", evaluation.report["confusion"])

# %% [markdown]
# ## Using the model: it needs nothing but the checkpoint

# %%
gate = audiogate.load(result.run.best)
print(gate.predict(found.clips[-1].path))
