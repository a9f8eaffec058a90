"""The hooks quantlab's pytest plugin adds where pytest-benchmark is installed (registered by
``quantlab.pytest_plugin`` then only): run-wide facts in its machine_info and JSON, and its
comparison of machine_info made safe."""

import json

import pytest


def _dumps(value):
    return json.dumps(value, sort_keys=True, default=str)


class BenchmarkHooks:
    """Hooks that exist only with pytest-benchmark: run-wide facts in its machine_info."""

    def __init__(self, session):
        self.session = session

    def pytest_benchmark_update_machine_info(self, config, machine_info):
        from quantlab import machine
        from quantlab._tf import versions

        # Only stable facts: --benchmark-compare warns when machine_info differs. The machine's
        # name (QUANTLAB_MACHINE, else host and CPU) tells apart the runs that several machines
        # save into one --benchmark-storage; the host's boot id is left out: it changes at boot.
        machine_info["quantlab"] = {"machine": machine.identity(self.session.cpu)["name"],
                                    "cpu": self.session.cpu, "versions": versions()}

    @pytest.hookimpl(wrapper=True)
    def pytest_benchmark_compare_machine_info(self, config, benchmarksession, machine_info,
                                              compared_benchmark):
        """pytest-benchmark's own check warns when machine_info differs (with the machine's
        name in it, always, between machines), and its warning fails on a storage outside the
        current folder (ValueError) or a saved run without machine_info (KeyError)."""
        try:
            return (yield)
        except (ValueError, KeyError):  # its own warning, without the storage's place
            saved = compared_benchmark.get("machine_info", "(none saved)")
            benchmarksession.logger.warning(
                f"Benchmark machine_info is different. Current: {_dumps(machine_info)} VS "
                f"saved: {_dumps(saved)}.")
            return []

    def pytest_benchmark_update_json(self, config, benchmarks, output_json):
        # Cases a runtime could not run have no benchmark entry: keep them, with the reason.
        output_json["quantlab"] = {"not_run": self.session.skipped}
