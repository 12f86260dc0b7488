import numpy as np
from critic.inference import cascade
d = "/tmp/cas"
L = lambda n: np.load(f"{d}/{n}.npy")
vl, tl, vm, tm = L("val_labels"), L("test_labels"), L("val_model"), L("test_model")
for name in ("base", "C30", "C100", "tri", "nb1"):
    vc, tc = L("val_" + name), L("test_" + name)
    row = []
    for margin in (0.001, 0.002, 0.005, 0.01):
        ch = cascade.choose_threshold(vc, vm, vl, margin)
        ans = tc.max(1) >= ch["threshold"]
        pred = np.where(ans, tc.argmax(1), tm.argmax(1))
        row.append(f"{ans.mean():.1%}/{np.mean(pred == tl) - np.mean(tm.argmax(1) == tl):+.2%}")
    # the same on test alone (its own threshold): how the share at each margin differs
    row2 = []
    for margin in (0.001, 0.002, 0.005, 0.01):
        row2.append(f"{cascade.choose_threshold(tc, tm, tl, margin)['coverage']:.1%}")
    print(f"{name:6s} val-chosen test share/Δacc: {'  '.join(row)} | test-chosen share: {' '.join(row2)}")
