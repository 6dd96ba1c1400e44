"""The trained fixtures are trained once per recipe, also when several test processes (pytest -n) ask for
the same one at the same time: one trains, the others wait and load what it saved."""

from __future__ import annotations

import json
import threading

from mvit2_export import fixture
from mvit2_export.fixture import Recipe, trained_fixture

TINY = Recipe(image_size=64, steps=2, batch=2)


def test_concurrent_requests_train_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MVIT2_EXPORT_CACHE", str(tmp_path))
    trainings = []
    real = fixture.train

    def counted(recipe, log=False):
        trainings.append(threading.get_ident())
        return real(recipe, log)

    monkeypatch.setattr(fixture, "train", counted)
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(trained_fixture(TINY))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trainings) == 1
    assert len(set(folders)) == 1 and len(folders) == 3
    folder = folders[0]
    assert json.loads((folder / "fixture.json").read_text())["recipe"]["steps"] == TINY.steps
    assert (folder / "model.safetensors").stat().st_size > 0
    # no temporary folder left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, folder.name + ".lock"])
