"""``split_file``: a split given by the user (a data set's own, or a run's split.csv) is the
split of the run, as it is; clips it does not list are left out with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiogate.cli import main
from audiogate.data import Clip
from audiogate.data.split import read_split, read_split_file, split_as_given
from audiogate.errors import DataError

from .conftest import TINY_FLAGS, make_toy_dataset


def _write(path: Path, rows: list[tuple[str, Path]]) -> Path:
    path.write_text("subset,path\n" + "".join(f"{s},{p}\n" for s, p in rows))
    return path


def test_a_given_split_is_kept_and_unlisted_clips_are_left_out(tmp_path: Path) -> None:
    clips = [Clip(str(tmp_path / f"{c}{i}.wav"), label, "") for label, c in enumerate("ab")
             for i in range(6)]
    given = {str(Path(c.path).resolve()): s for c, s in
             zip(clips, ["train", "train", "val", "test", "train", "val"] * 2, strict=True)}
    del given[str(Path(clips[5].path).resolve())]
    split, unlisted = split_as_given(clips, given, balance_by="none", seed=0)
    assert [c.path for c in split.val] == [clips[2].path, clips[8].path, clips[11].path]
    assert unlisted == [clips[5]]
    with pytest.raises(DataError, match=r"no clip of class label.*in train"):
        split_as_given(clips[:6], {str(Path(c.path).resolve()): "test" for c in clips[:6]},
                       balance_by="none", seed=0)


@pytest.mark.parametrize(("text", "match"), [
    ("subset,path\nholdout,a.wav\n", "subset must be train, val or test"),
    ("sub,file\ntrain,a.wav\n", "columns subset,path"),
    ("subset,path\n", "lists no clip"),
])
def test_a_bad_split_file_is_refused_with_the_reason(tmp_path: Path, text: str,
                                                     match: str) -> None:
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        read_split_file(tmp_path / "s.csv")
    with pytest.raises(DataError, match="not found"):
        read_split_file(tmp_path / "missing.csv")


@pytest.mark.slow
def test_train_uses_the_split_file_and_a_run_split_can_be_reused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_toy_dataset(tmp_path / "data", n_per_class=12)
    files = sorted(data.rglob("*.wav"))
    subsets = ["train", "train", "val", "test"]
    rows = [(subsets[i % 4], f) for i, f in enumerate(files) if f.name != "tone_000.wav"]
    split_file = _write(tmp_path / "split.csv", rows)
    flags = [*TINY_FLAGS, "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs")]
    assert main(["-q", "train", "--data", str(data), "--split-file", str(split_file),
                 "--name", "given", "--balance", "none", *flags]) == 0
    run = tmp_path / "runs" / "given"
    got = read_split(run / "split.csv")
    want = {str(f.resolve()): s for s, f in rows}
    assert {c.path: s for s in ("train", "val", "test") for c in getattr(got, s)} == want
    assert "tone_000.wav,not in the split file" in (run / "skipped.csv").read_text()
    # a run's own split.csv is a split file: the same split again
    assert main(["-q", "train", "--data", str(data), "--split-file", str(run / "split.csv"),
                 "--name", "again", "--balance", "none", *flags]) == 0
    assert read_split(tmp_path / "runs" / "again" / "split.csv") == got


def test_a_voice_gate_refuses_a_split_that_enrols_no_clip_of_an_allowed_voice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from audiogate.config import Config
    from audiogate.gates.voice import data as voice_data
    from audiogate.speech.embeddings import EmbeddedClips

    for who, cls in (("ann", "allowed"), ("bob", "allowed"), ("eve", "not_allowed")):
        for i in range(3):
            (tmp_path / "d" / cls / who).mkdir(parents=True, exist_ok=True)
            (tmp_path / "d" / cls / who / f"{i}.wav").write_bytes(b"")

    def embedded(clips: list[Clip], **_: object) -> tuple[EmbeddedClips, list[object]]:
        return EmbeddedClips(clips=list(clips), labels=np.array([c.label for c in clips]),
                             vectors=np.ones((len(clips), 256), np.float32),
                             speech_s=np.ones(len(clips))), []

    monkeypatch.setattr(voice_data, "embed_clips", embedded)
    monkeypatch.setattr(voice_data, "discover", lambda root, **_: type("D", (), {
        "classes": ("not_allowed", "allowed"), "skipped": [],
        "clips": [Clip(str(p), int("/allowed/" in str(p)), p.parent.name)
                  for p in sorted((tmp_path / "d").rglob("*.wav"))]})())
    in_train = {"ann", "eve"}  # bob's clips all go to test: bob would never be enrolled
    rows = [("train" if p.parent.name in in_train else "test", p)
            for p in sorted((tmp_path / "d").rglob("*.wav"))]
    config = Config(recipe="voice", data=str(tmp_path / "d"), cache=False,
                    split_file=str(_write(tmp_path / "s.csv", rows)))
    with pytest.raises(DataError, match=r"no clip of allowed voice.*bob in train"):
        voice_data.prepare_voice_data(config, progress=False)
