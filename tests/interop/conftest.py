"""Names the CPU features that decide which weights the interop tests give ONNX Runtime."""
from test_onnxruntime import HAS_VNNI


def pytest_report_header(config):
    weights = "full-range weights (VNNI present)" if HAS_VNNI else "7-bit weights, --reduce-range (no VNNI: ONNX Runtime's U8S8 kernels would saturate)"
    return f"ONNX Runtime's int8 kernels are checked on {weights}"
