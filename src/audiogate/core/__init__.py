"""The bottom layer: what every other part of audiogate shares.

Nothing here imports from ``data``, ``features``, ``models``, ``training``, ``reporting``,
``voice``, ``gates`` or ``deploy``; they all import from here.
"""
