"""hdetach.settings: every environment setting read at each call, and the one way to
override one for a block."""

import pytest

from hdetach import settings


def test_settings_are_read_at_each_call(monkeypatch):
    monkeypatch.setenv("HDETACH_ONEDNN", "0")
    assert settings.onednn_products() == "0"
    monkeypatch.delenv("HDETACH_ONEDNN")
    assert settings.onednn_products() == "auto"


def test_overridden_restores_the_setting_even_after_an_error(monkeypatch):
    monkeypatch.delenv("HDETACH_TRITON_AUTO", raising=False)
    with settings.overridden("HDETACH_TRITON_AUTO", "1"):
        assert settings.triton_in_auto()
    assert not settings.triton_in_auto()
    monkeypatch.setenv("HDETACH_CPU_KERNEL", "python")
    with pytest.raises(KeyError), settings.overridden("HDETACH_CPU_KERNEL", "compiled"):
        assert settings.cpu_kernel() == "compiled"
        raise KeyError
    assert settings.cpu_kernel() == "python"
