"""The process that times a study's cases runs pytest with the latency suite's two plugins
(pytest-benchmark and quantlab's) and no other: a plugin installed beside them would run
inside the timed process."""

import io
import os
import subprocess
import sys
from types import SimpleNamespace

from quantlab import study
from quantlab.progress import Progress

PLUGIN = "import os\nopen(os.environ['PLANTED_PLUGIN_MARK'], 'w').close()\n"


def plant_plugin(folder):
    """A pytest plugin installed as pip installs one (a distribution whose entry point is in
    group pytest11) under ``folder``; it leaves a file wherever it is loaded."""
    (folder / "planted_plugin.py").write_text(PLUGIN)
    info = folder / "planted_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: planted-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest11]\nplanted = planted_plugin\n")


def test_a_pytest_plugin_installed_beside_quantlab_does_not_run_in_the_timed_process(
        tmp_path, monkeypatch, tiny_models):
    site = tmp_path / "site"
    site.mkdir()
    plant_plugin(site)
    mark = tmp_path / "loaded"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PLANTED_PLUGIN_MARK", str(mark))

    # The plugin is live: any other pytest run loads it.
    subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider"],
                   cwd=tmp_path, capture_output=True, timeout=120)
    assert mark.exists()
    mark.unlink()

    config = study.StudyConfig(dataset="digits", nets=("conv",), variants=("float32",),
                               runtimes=("litert",), batch_sizes=(1,), threads=(1,), quick=True, rounds=0.5,
                               out=tmp_path / "out")
    artifacts = {"float32": SimpleNamespace(path=tiny_models["float32"], sha256=None, precision=None)}
    [record] = study.time_net(config, "conv", artifacts, ("litert",), Progress(io.StringIO(), bars=False))
    assert record["median"] > 0 and record["variant"] == "float32"
    assert not mark.exists()
