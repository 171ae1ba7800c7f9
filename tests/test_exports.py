import importlib
import types

import cometgen


def test_all_is_sorted() -> None:
    names = [n for n in cometgen.__all__ if n != "__version__"]
    assert names == sorted(names)


def test_all_is_importable() -> None:
    for name in cometgen.__all__:
        assert hasattr(cometgen, name), name


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(cometgen).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(cometgen.__all__), public - set(cometgen.__all__)


def test_public_classes_report_public_module() -> None:
    for name in cometgen.__all__:
        obj = getattr(cometgen, name)
        if isinstance(obj, type):
            assert obj.__module__ == "cometgen", name


def test_testing_module_is_public() -> None:
    testing = importlib.import_module("cometgen.testing")
    assert "MockServer" in testing.__all__
