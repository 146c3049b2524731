"""Looking at results: metrics (pure functions of labels), text tables, figures, the EDA of a
data folder and the evaluation of a checkpoint on held-out clips.

Modules: :mod:`.metrics`, :mod:`.tables`, :mod:`.plots`, :mod:`.eda`, :mod:`.evaluate`.
"""
