"""The seed's own module — a timm Attention block with `q * self.scale`, `q @ k.transpose(-2, -1)`,
softmax and `attn @ v` — through `octet.torch.quantize`: both matmuls and the scalar multiply run
on int8 kernels, and the output stays within cosine 0.999 of the float module."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: pip install './crates/python[torch]'")
nn = torch.nn

import octet  # noqa: E402
import octet.torch  # noqa: E402


class Attention(nn.Module):
    """The seed thread's QuantAttention without its eager-mode stubs."""

    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


def test_the_seed_attention_runs_on_int8_kernels_through_torch():
    torch.manual_seed(0)
    module = Attention(128, num_heads=4).eval()
    calibration = torch.randn(32, 197, 128)
    x = torch.randn(2, 197, 128)
    qm = octet.torch.quantize(module, torch.randn(1, 197, 128), calibration=calibration, progress=False)
    with torch.no_grad():
        want = module(x)
    got = qm(x)
    assert isinstance(got, torch.Tensor) and got.shape == want.shape
    a, b = got.double().ravel(), want.double().ravel()
    c = float(a @ b / (a.norm() * b.norm()))
    print(f"seed attention through octet.torch.quantize: output cosine to fp32 {c:.5f}")
    assert c >= 0.999
    nodes = qm.check()["nodes"]
    matmuls = [n for n in nodes if n["op"] == "MatMul"]
    assert len(matmuls) >= 4 and all(n["status"] == "int8" for n in matmuls), [(n["name"], n["status"], n["kernel"]) for n in matmuls]
    assert any("fused attention" in n["kernel"] for n in matmuls), "Q·Kᵀ and P·V run in the fused int8 attention kernel"
    muls = [n for n in nodes if n["op"] == "Mul"]
    assert muls and all(n["status"] == "int8" for n in muls), [(n["name"], n["status"], n["why"]) for n in muls]


def test_data_loaders_calibrate():
    module = Attention(64, num_heads=2).eval()
    data = torch.utils.data.TensorDataset(torch.randn(16, 10, 64), torch.zeros(16, dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    qm = octet.torch.quantize(module, torch.randn(1, 10, 64), calibration=loader, preset="int8-gemm", progress=False)
    out = qm(torch.randn(3, 10, 64))
    assert out.shape == (3, 10, 64) and np.isfinite(out.numpy()).all()
