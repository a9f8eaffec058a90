"""OpenVINO and ONNX Runtime write into the user's home when first imported, and OpenVINO
sends a usage event: ONNX Runtime a device id and a database under
``~/.cache/Microsoft/DeveloperTools``, OpenVINO a client id and usage counts under ``~/intel``
(unless a consent file there says no). quantlab writes nothing in the user's home and sends
nothing, so ``off()`` runs before either is imported: at the import of ``quantlab.runtime``
and ``quantlab.onnx_int8`` (which every path to them passes through) and before NNCF's
accuracy control.
"""

import os


def off():
    # Read by ONNX Runtime's native library when it loads; a user's own setting stands.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        from openvino_telemetry.utils.opt_in_checker import OptInChecker
    except ImportError:  # no telemetry package: OpenVINO imports its stub, which does nothing
        return
    # openvino_telemetry's own rule: where it finds no folder for its consent file, the
    # answer is no, and it neither writes a client id nor sends anything.
    OptInChecker.consent_file_base_dir = staticmethod(lambda: None)
