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
    import msgspec

    for name in cometgen.__all__:
        obj = getattr(cometgen, name)
        if isinstance(obj, type) and not issubclass(obj, msgspec.Struct):
            assert obj.__module__ == "cometgen", name


def test_public_structs_still_decode() -> None:
    import msgspec

    record = cometgen.ManifestRecord(key="k", status="done", metadata={"a": 1})
    data = msgspec.json.encode(record)
    assert msgspec.json.decode(data, type=cometgen.ManifestRecord) == record


def test_testing_module_is_public() -> None:
    testing = importlib.import_module("cometgen.testing")
    assert "MockServer" in testing.__all__
