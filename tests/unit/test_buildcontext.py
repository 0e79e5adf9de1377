"""The build context of an own-image app: the context folder as it is, the model at model_path, nothing else."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from shared import buildcontext


def test_an_app_context_holds_its_folder_and_the_model_at_its_path_replacing_the_repositorys(tmp_path: Path):
    context, model = tmp_path / "app", tmp_path / "model"
    (context / "weights").mkdir(parents=True)
    (context / "__pycache__").mkdir()
    (context / "Dockerfile").write_text("FROM x\n")
    (context / "app.py").write_text("print(1)\n")
    (context / "weights" / "old.joblib").write_text("the repository's copy")
    (context / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    os.symlink("/etc/passwd", context / "escape")
    model.mkdir()
    (model / "model.joblib").write_bytes(b"weights")
    (model / "sample-request.json").write_text("{}")

    out = io.BytesIO()
    buildcontext.write_app(out, context=context, model=model, model_path="weights/")
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["Dockerfile", "app.py", "weights/model.joblib", "weights/sample-request.json"]
        assert tar.extractfile("weights/model.joblib").read() == b"weights"
        assert {(m.mtime, m.uid, m.gid) for m in members.values()} == {(0, 0, 0)}  # the cache keys on content


def test_the_same_inputs_give_the_same_context_bytes(tmp_path: Path):
    context, model = tmp_path / "app", tmp_path / "model"
    context.mkdir()
    model.mkdir()
    (context / "Dockerfile").write_text("FROM x\n")
    (model / "m.onnx").write_bytes(b"1")
    first, second = io.BytesIO(), io.BytesIO()
    buildcontext.write_app(first, context=context, model=model, model_path="model")
    buildcontext.write_app(second, context=context, model=model, model_path="model/")
    assert first.getvalue() == second.getvalue()
