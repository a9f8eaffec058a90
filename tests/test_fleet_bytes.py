"""On a fleet every machine runs the bytes the study exported: the two sha256 checks, one
function at a time, against tampered files.

A worker writes the bytes it receives into its own cache and checks them (``_received``);
the study checks the files it kept in OUT/.state/artifacts before it sends them again
(``Fleet.ship``)."""

import hashlib

import distributed
import pytest

from quantlab import fleet
from quantlab.errors import QuantlabError
from quantlab.study import StudyConfig

MODEL = b"TFL3 the exported model" * 100


def _sha(content):
    return hashlib.sha256(content).hexdigest()


def _tampered(content):
    return content[:-1] + bytes([content[-1] ^ 1])


def test_a_worker_refuses_received_bytes_that_are_not_the_ones_named(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path))
    with pytest.raises(QuantlabError, match="does not hold the bytes it was sent"):
        fleet._received(_sha(MODEL), "int8.tflite", _tampered(MODEL))


def test_a_worker_replaces_a_changed_file_in_its_cache_with_the_bytes_it_was_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path))
    place = fleet.file_place(tmp_path / "received", _sha(MODEL), "int8.tflite")
    place.parent.mkdir(parents=True)
    place.write_bytes(_tampered(MODEL))  # left by an earlier study, then changed on disk
    assert fleet._received(_sha(MODEL), "int8.tflite", MODEL) == place
    assert place.read_bytes() == MODEL


@pytest.fixture
def study_fleet(tmp_path, digits):
    """A Fleet of the study on an in-process Dask cluster without workers: what it submits
    waits, and nothing runs."""
    config = StudyConfig(dataset="digits", nets=("conv",), variants=("float32",), runtimes=("litert",),
                         out=tmp_path / "out")
    with distributed.Client(processes=False, n_workers=0, dashboard_address=":0") as client:
        yield fleet.Fleet(config, client, digits, {}, lambda line: None)


def _kept(study_fleet):
    """An export's outcome, its files kept in OUT/.state/artifacts as the study keeps them."""
    meta = {"file": "float32.tflite", "sha256": _sha(MODEL), "bytes": len(MODEL)}
    stored = study_fleet.keep_artifacts({"metas": {"float32": meta}, "contents": {meta["sha256"]: MODEL},
                                         "entry": {}})
    return stored, study_fleet._artifact_path(meta)


def test_the_study_sends_a_kept_file_only_while_it_holds_the_bytes_its_sidecar_names(study_fleet):
    stored, path = _kept(study_fleet)
    path.write_bytes(_tampered(MODEL))
    assert study_fleet.ship("conv", stored) is False  # so the net is exported again
    assert "shipment" not in study_fleet.nets["conv"] and not study_fleet.pending


def test_the_study_sends_an_unchanged_kept_file_on(study_fleet):
    stored, _ = _kept(study_fleet)
    assert study_fleet.ship("conv", stored) is True
    assert study_fleet.nets["conv"]["artifacts"]["float32"].sha256 == _sha(MODEL)
    assert [job.stage for job in study_fleet.pending.values()] == ["evaluate"]
