"""npz_rel.py REF.npz OTHER.npz TOL: exit 0 when both files hold the same arrays (names, dtypes, shapes)
and every float array of OTHER is within TOL of REF relative to REF's scale (max |other - ref| <=
TOL * max |ref|); integer and bool arrays must be equal. Prints the worst relative difference."""
import sys
import numpy as np

a, b, tol = np.load(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3])
if sorted(a.files) != sorted(b.files) or not a.files:
    sys.exit(f"arrays differ: {sorted(a.files)} vs {sorted(b.files)}")
worst = 0.0
for name in a.files:
    x, y = a[name], b[name]
    if x.dtype != y.dtype or x.shape != y.shape or x.size == 0:
        sys.exit(f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        if not np.array_equal(x, y):
            sys.exit(f"{name}: integer outputs differ")
        continue
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        sys.exit(f"{name}: non-finite values")
    rel = np.abs(x - y).max() / max(np.abs(x).max(), 1e-30)
    worst = max(worst, rel)
    if rel > tol:
        sys.exit(f"{name}: relative difference {rel:.3g} over {tol}")
print(f"max relative difference {worst:.3g}")
