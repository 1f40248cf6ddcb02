"""Registering this package's classifiers with MMPretrain's model hub (spanet_mm/model_hub.py)."""

import pytest
import yaml

from helpers.commands import REPO_ROOT

ROOT = REPO_ROOT


def metafile_names():
    with open(ROOT / 'configs' / 'mmpretrain' / 'metafile.yml') as f:
        return sorted(m['Name'].lower() for m in yaml.safe_load(f)['Models'])


class FakeHub:
    """Records what spanet_mm.model_hub asks of MMPretrain's ModelHub."""

    def __init__(self, refuse=False):
        self.calls, self.refuse = [], refuse
        self._models_dict = {}

    def register_model_index(self, path, config_prefix=None):
        self.calls.append((path, config_prefix))
        if self.refuse:
            raise ValueError('The model name spanet_s_in1k is conflict')
        with open(path) as f:
            for model in yaml.safe_load(f)['Models']:
                self._models_dict[model['Name'].lower()] = type('Meta', (), {'filepath': path})()


def test_registration_happens_once_per_hub():
    from spanet_mm import model_hub

    hub = FakeHub()
    names = model_hub.register_model_index(hub)
    assert names == metafile_names()
    assert model_hub.register_model_index(hub) == names
    assert hub.calls == [(str(ROOT / 'configs' / 'mmpretrain' / 'metafile.yml'), str(ROOT))]


def test_registration_conflict_warns(monkeypatch):
    from spanet_mm import model_hub

    with pytest.warns(UserWarning, match='ModelHub refused'):
        model_hub.register_model_index(FakeHub(refuse=True))


def test_metafile_lookup(tmp_path, monkeypatch):
    """Source tree first, then the copy a wheel ships in spanet_mm/.mim; else a warning."""
    from spanet_mm import model_hub

    package = tmp_path / 'site-packages' / 'spanet_mm'
    package.mkdir(parents=True)
    monkeypatch.setattr(model_hub, '_PACKAGE_DIR', str(package))
    assert model_hub.locate_metafile() is None
    with pytest.warns(UserWarning, match='was found neither in the source tree'):
        assert model_hub.register_model_index(FakeHub()) == []
    shipped = package / '.mim' / 'configs' / 'mmpretrain'
    shipped.mkdir(parents=True)
    (shipped / 'metafile.yml').write_text('Models: []\n')
    assert model_hub.locate_metafile() == (str(shipped / 'metafile.yml'), str(package / '.mim'))
    source = tmp_path / 'site-packages' / 'configs' / 'mmpretrain'
    source.mkdir(parents=True)
    (source / 'metafile.yml').write_text('Models: []\n')
    assert model_hub.locate_metafile() == (
        str(source / 'metafile.yml'),
        str(tmp_path / 'site-packages'),
    )
