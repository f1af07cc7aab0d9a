"""npz_close.py A.npz B.npz [RTOL ATOL]: exit 0 when both files hold the same arrays (names, dtypes,
shapes) and their values agree within rtol/atol (defaults 1e-5, 1e-6); otherwise print the first
difference and exit 1. Results of different batch sizes or kernel paths are never compared by bytes."""
import sys
import numpy as np

a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
rtol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-5
atol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-6
if sorted(a.files) != sorted(b.files):
    sys.exit(f"arrays differ: {sorted(a.files)} vs {sorted(b.files)}")
for name in a.files:
    x, y = a[name], b[name]
    if x.dtype != y.dtype or x.shape != y.shape:
        sys.exit(f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
    if x.size == 0:
        sys.exit(f"{name}: empty")
    if not np.allclose(x, y, rtol=rtol, atol=atol):
        d = np.abs(x.astype(np.float64) - y.astype(np.float64))
        sys.exit(f"{name}: max abs diff {d.max():.3g} over rtol {rtol} atol {atol}")
