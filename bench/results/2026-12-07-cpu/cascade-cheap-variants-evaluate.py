import sys, glob, numpy as np
from critic.inference import cascade
d = sys.argv[1]
L = lambda n: np.load(f"{d}/{n}.npy")
vl, tl, vm, tm = L("val_labels"), L("test_labels"), L("val_model"), L("test_model")
print(f"model alone: val {np.mean(vm.argmax(1)==vl):.4f} test {np.mean(tm.argmax(1)==tl):.4f}")
names = sorted(p.split("val_")[1][:-4] for p in glob.glob(f"{d}/val_*.npy") if not p.endswith(("labels.npy", "model.npy")))
def show(name, vc, tc):
    ch = cascade.choose_threshold(vc, vm, vl)
    if ch["threshold"] is None:
        print(name, "none"); return
    ans = tc.max(1) >= ch["threshold"]
    pred = np.where(ans, tc.argmax(1), tm.argmax(1))
    print(f"{name:12s} val share {ch['coverage']:.1%} test share {ans.mean():.1%} cascade {np.mean(pred==tl):.2%} model {np.mean(tm.argmax(1)==tl):.2%} cheap {np.mean(tc.argmax(1)==tl):.2%} thr {ch['threshold']:.4f}")
P = {n: (L("val_" + n), L("test_" + n)) for n in names}
for n in names: show(n, *P[n])
# two cheap stages: answer where both agree, with the lower confidence
for a in names:
    for b in names:
        if a < b:
            def comb(x, y):
                agree = x.argmax(1) == y.argmax(1)
                p = (x + y) / 2
                conf = np.minimum(x.max(1), y.max(1)) * agree
                out = np.zeros_like(p); out[np.arange(len(p)), p.argmax(1)] = 0.5 + conf / 2  # monotone in conf
                out[np.arange(len(p)), 1 - p.argmax(1)] = 1 - out[np.arange(len(p)), p.argmax(1)]
                return out
            show(f"{a}&{b}", comb(*[P[a][0], P[b][0]]), comb(*[P[a][1], P[b][1]]))
