"""Finding models by name: the built-ins, unknown names, and a third-party plug-in."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.models.support import BUILTIN
from twin_server.errors import ConfigError
from twin_server.models import registry
from twin_server.models.base import Model

PLUGIN_MODULE = '''
"""A throwaway third-party model."""
from twin_server.models.base import Kind, Model, Variable


class Conveyor(Model):
    """A belt moving at a speed: position integrates speed."""

    direct_feedthrough = False
    variables = (
        Variable("speed", Kind.INPUT, "m/s", description="belt speed"),
        Variable("position", Kind.OUTPUT, "m", description="distance travelled"),
    )

    def reset(self, parameters, initial):
        self.parameters = dict(parameters)
        self.position = 0.0
        return {"position": 0.0}

    def step(self, t, dt, inputs):
        self.position += inputs["speed"] * dt
        return {"position": self.position}
'''


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Forget the cached entry points before and after the test."""
    registry.available.cache_clear()
    yield
    registry.available.cache_clear()


class TestBuiltins:
    @pytest.mark.parametrize(("name", "target"), [pytest.param(n, t, id=n)
                                                  for n, t in BUILTIN.items()])
    def test_builtin_resolves(self, name: str, target: str) -> None:
        """Each of the 12 built-in names resolves to its class through the entry points."""
        cls = registry.get(name)
        assert f"{cls.__module__}.{cls.__qualname__}" == target
        assert issubclass(cls, Model)

    def test_unknown_name_lists_known_ones(self) -> None:
        """An unknown name raises a ConfigError that lists every known model."""
        with pytest.raises(ConfigError) as info:
            registry.get("water_tonk")
        message = str(info.value)
        assert "unknown model 'water_tonk'" in message
        for name in BUILTIN:
            assert name in message


class TestPlugins:
    def test_third_party_model_is_found(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        fresh_registry: None) -> None:
        """A distribution declaring a twin_server.models entry point adds its model by name."""
        dist = tmp_path / "demo_plugin-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(
            "[twin_server.models]\nconveyor = demo_plugin_models:Conveyor\n")
        (tmp_path / "demo_plugin_models.py").write_text(textwrap.dedent(PLUGIN_MODULE))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "demo_plugin_models", raising=False)

        cls = registry.get("conveyor")

        assert cls.__name__ == "Conveyor" and cls.__module__ == "demo_plugin_models"
        model = cls()
        model.reset({}, {})
        assert model.step(0.0, 0.5, {"speed": 2.0}) == {"position": 1.0}
        assert "water_tank" in registry.available()  # the built-ins are still there
        sys.modules.pop("demo_plugin_models", None)

    def test_plugin_that_is_not_a_model_is_skipped(self, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   fresh_registry: None) -> None:
        """An entry point naming something other than a Model class is left out, not fatal."""
        dist = tmp_path / "bad_plugin-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugin\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(
            "[twin_server.models]\nnot_a_model = bad_plugin_models:helper\n")
        (tmp_path / "bad_plugin_models.py").write_text("def helper():\n    return 1\n")
        monkeypatch.syspath_prepend(str(tmp_path))

        assert "not_a_model" not in registry.available()
        assert len(set(BUILTIN) & set(registry.available())) == 12
        sys.modules.pop("bad_plugin_models", None)
