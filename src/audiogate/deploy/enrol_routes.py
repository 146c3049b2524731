"""The service's enrolment endpoints for a voice gate: ``POST /enroll`` (a name and
recordings) and ``DELETE /enroll/{name}``.

They change the gate being served, under the same lock as the verdicts, and write it with its
voices to ``ServeSettings.enroll_out`` after each change (``audiogate serve --enroll-out
PATH``); a change that cannot be written is undone. Behind the access token like every
endpoint but ``/health``. Enrolment is off (403) without ``enroll_out``, and refused (409) for
a model that is no voice gate; uploads are checked as ``/predict`` checks them, and all the
files of one request together may decode to no more than one ``/predict`` upload
(:meth:`~audiogate.deploy.judge.Judge.decode_all`). Each file is decoded in turn and only what
enrolment uses of it (the gate's ``clip_limit`` first samples) is kept.
"""

from __future__ import annotations

import logging
from typing import IO, Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from ..core.gate import Gate
from ..errors import ConfigError, DataError
from .judge import Judge

log = logging.getLogger(__name__)

FILES_FIELD = "files"
NAME_FIELD = "name"


class Enroller:
    """Enrolment through a :class:`~audiogate.deploy.judge.Judge` (its gate, decoding and
    lock)."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge

    def _voice_gate(self) -> Gate:
        gate = self.judge.gate
        if not gate.enrolls:
            raise HTTPException(409, "this model is not a voice gate checkpoint: only voice "
                                     "gates (--recipe voice, served from their .pt) enrol "
                                     "voices")
        if self.judge.settings.enroll_out is None:
            raise HTTPException(403, "enrolment over HTTP is off: start the server with "
                                     "--enroll-out PATH (where the gate is saved)")
        return gate

    def _change(self, gate: Gate, change: Any, *, missing: int, unusable: int) -> Any:
        """Apply ``change()`` and save, under the lock; undo it if either fails
        (:meth:`~audiogate.core.gate.Gate.changes`). A :class:`ConfigError` answers
        ``missing``, a :class:`DataError` ``unusable``."""
        with self.judge.lock:
            try:
                with gate.changes():
                    done = change()
                    gate.save(str(self.judge.settings.enroll_out))
            except ConfigError as exc:
                raise HTTPException(missing, str(exc)) from None
            except DataError as exc:
                raise HTTPException(unusable, str(exc)) from None
        return done

    def enroll(self, name: str, uploads: list[tuple[IO[bytes], str | None]]) -> dict[str, Any]:
        """Enrol voice ``name`` from uploaded clips (409: the name is enrolled; 422: no clip
        holds speech)."""
        gate = self._voice_gate()
        with self.judge.slots:
            waves = self.judge.decode_all(uploads, keep=gate.clip_limit)
            done = self._change(gate, lambda: gate.enroll(name, waves, sr=gate.features.sr),
                                missing=409, unusable=422)
        out = self.judge.settings.enroll_out
        log.info("enrolled voice %r from %d clip(s) -> %s", name, done.n_clips, out)
        return {"name": name, "clips": done.n_clips,
                "left_out": [reason for _, reason in done.skipped], "voices": gate.voices,
                "quality": done.quality, "saved": out}

    def remove(self, name: str) -> dict[str, Any]:
        """Remove voice ``name`` (404: not enrolled; 409: the last voice)."""
        gate = self._voice_gate()
        self._change(gate, lambda: gate.remove(name), missing=404, unusable=409)
        out = self.judge.settings.enroll_out
        log.info("removed voice %r -> %s", name, out)
        return {"name": name, "removed": True, "voices": gate.voices, "saved": out}


def add_enrol_routes(app: FastAPI, judge: Judge) -> None:
    """``POST /enroll`` and ``DELETE /enroll/{name}`` on ``app``."""
    enroller = Enroller(judge)

    @app.post("/enroll", summary="Enrol an allowed voice (voice gate, --enroll-out)",
              responses={403: {"description": "enrolment is off (no --enroll-out)"},
                         409: {"description": "not a voice gate, or the name is enrolled"},
                         413: {"description": "upload or recording over the limit"},
                         415: {"description": "not multipart/form-data, or not audio"},
                         422: {"description": "no file, or no clip holds speech"}})
    async def enroll(request: Request, name: Annotated[str, Form(
            description="the voice's name")], files: Annotated[list[UploadFile] | None, File(
            description="recordings of the voice (WAV, FLAC, OGG, MP3, ...)")] = None,
                     ) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise HTTPException(415, f"send the name and the recordings as multipart/form-data "
                                     f"fields '{NAME_FIELD}' and '{FILES_FIELD}'")
        if not files:
            raise HTTPException(422, f"no file: send the recordings as the multipart/form-data "
                                     f"field '{FILES_FIELD}'")
        return await run_in_threadpool(enroller.enroll, name,
                                       [(f.file, f.filename) for f in files])

    @app.delete("/enroll/{name}", summary="Remove an enrolled voice (voice gate, "
                                          "--enroll-out)",
                responses={403: {"description": "enrolment is off (no --enroll-out)"},
                           404: {"description": "no voice of that name"},
                           409: {"description": "not a voice gate, or the last voice"}})
    async def unenroll(name: str) -> dict[str, Any]:
        return await run_in_threadpool(enroller.remove, name)
