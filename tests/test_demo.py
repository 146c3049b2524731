"""`audiogate demo`, run as scripts/demo.sh runs it, prints a result within the range the demo
states (its figures vary a little from machine to machine with floating-point rounding)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from audiogate.demo import EPOCHS, N_PER_CLASS, PREDICT_EXAMPLES, TEST_F1_RANGE

TRAINED = re.compile(r"\[3/4\] trained (\d+) epochs; best epoch (\d+) \(val macro-F1 ([\d.]+)\)")
TESTED = re.compile(r"clips: (\d+)\s+macro-F1: ([\d.]+)\s+accuracy: ([\d.]+)")
GATE = re.compile(r"accept as allowed when P\(allowed\) >= ([\d.]+)")
PREDICTED = re.compile(r"  predict .*/(allowed|not_allowed)_\d+\.wav: (allowed|not_allowed) "
                       r"\(([\d.]+)\)")


@pytest.mark.slow
def test_demo_prints_a_result_in_the_stated_range(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "audiogate", "demo", "--out", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout
    assert f"[1/4] demo data set: {{'allowed': {N_PER_CLASS}, 'not_allowed': {N_PER_CLASS}}}" \
        in printed

    trained = TRAINED.search(printed)
    assert trained, printed
    epochs, best_epoch, best_val_f1 = int(trained[1]), int(trained[2]), float(trained[3])
    assert epochs == EPOCHS and 1 <= best_epoch <= EPOCHS
    assert TEST_F1_RANGE[0] <= best_val_f1 <= 1.0, printed

    tested = TESTED.search(printed)
    assert tested, printed
    n_test, macro_f1, accuracy = int(tested[1]), float(tested[2]), float(tested[3])
    assert n_test == round(0.15 * 2 * N_PER_CLASS)  # the default test_size
    low, high = TEST_F1_RANGE
    assert low <= macro_f1 <= high and low <= accuracy <= high, printed
    assert f"(expected: macro-F1 {low:.2f} to {high:.2f};" in printed
    gate = GATE.search(printed)
    assert gate and 0.0 < float(gate[1]) < 1.0, printed

    predicted = PREDICTED.findall(printed)
    assert len(predicted) == 2 * PREDICT_EXAMPLES, printed
    assert all(0.0 <= float(confidence) <= 1.0 for _, _, confidence in predicted)
    assert (out / "runs" / "demo" / "models" / "best.pt").is_file()
