"""JSON that audiogate writes or prints is strict: never NaN or Infinity (issue 12, item 7)."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

import audiogate
from audiogate import load
from audiogate.deploy.serve import create_app
from audiogate.models.checkpoint import load_checkpoint, save_checkpoint

from .conftest import build_band_gate

PACKAGE = Path(audiogate.__file__).parent


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in {text[:200]}")
    return json.loads(text, parse_constant=refuse)


def test_only_files_py_serialises_json() -> None:
    """Every JSON writer and printer goes through ``files.to_json`` (which maps NaN to null):
    no other module calls ``json.dump``/``json.dumps``."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "files.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("dump", "dumps")
                    and isinstance(node.value, ast.Name) and node.value.id == "json"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_service_sends_null_for_non_finite_metrics(tmp_path: Path) -> None:
    """A NaN metric is sent as null. (FastAPI releases that render with starlette's
    ``JSONResponse`` answer 500 instead, since it refuses NaN; the service renders its JSON
    with ``files.to_json`` whatever the FastAPI version.)"""
    ckpt = load_checkpoint(build_band_gate(tmp_path / "band.pt"))
    save_checkpoint(tmp_path / "nan.pt", net=ckpt.build_net(), spec=ckpt.spec,
                    config=ckpt.config, classes=ckpt.classes, epoch=1,
                    metrics={"val_f1": float("nan"), "val_loss": float("-inf")})
    app = create_app(load(tmp_path / "nan.pt"))

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/model")

    response = asyncio.run(get())
    assert response.status_code == 200
    info = _strict(response.text)
    assert info["val_f1"] is None and info["metrics"] == {"val_f1": None, "val_loss": None}
