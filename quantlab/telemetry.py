"""OpenVINO and ONNX Runtime write into the user's home when first imported, and OpenVINO
sends a usage event: ONNX Runtime a device id and a database under
``~/.cache/Microsoft/DeveloperTools``, OpenVINO (and NNCF, which imports it) a client id and
usage counts under ``~/intel`` (unless a consent file there says no). quantlab writes nothing
in the user's home and sends nothing: each switch runs before its package is imported.
"""

import os


def onnxruntime_off():
    """At the import of ``quantlab.runtime`` and ``quantlab.onnx_int8``, every path to ONNX
    Runtime: an environment variable its native library reads when it loads (free)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # a user's own setting stands


def openvino_off():
    """Where OpenVINO or NNCF is imported, and only there: the telemetry package costs 20 ms
    to import, a third of a second under valgrind, in processes that never load OpenVINO."""
    try:
        from openvino_telemetry.utils.opt_in_checker import OptInChecker
    except ImportError:  # no telemetry package: OpenVINO imports its stub, which does nothing
        return
    # openvino_telemetry's own rule: where it finds no folder for its consent file, the
    # answer is no, and it neither writes a client id nor sends anything.
    OptInChecker.consent_file_base_dir = staticmethod(lambda: None)
