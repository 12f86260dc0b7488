"""Step 2: the cascade's threshold by today's rule (a bound on the reviews it loses) against a rule on the net
change (losses less gains: the discordant share and the share of them lost, each bounded at 97.5%), both chosen on
validation with margin 0.001, then applied to the whole test split. Run as  python cascade-net-rule.py OUT"""
import sys
import numpy as np
from scipy.stats import beta
from critic.inference import cascade

d = sys.argv[1]
L = lambda n: np.load(f"{d}/{n}.npy", allow_pickle=True)
vl, vc, vm = L("val_labels"), L("val_cheap"), L("val_model")
tl, tc, tm = L("test_labels"), L("test_cheap"), L("test_model")


def net_threshold(cheap, model, labels, margin=0.001):
    confidence = cheap.max(axis=1)
    cheap_right = cheap.argmax(axis=1) == labels
    model_right = model.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    lost = np.cumsum((~cheap_right & model_right)[order])
    gained = np.cumsum((cheap_right & ~model_right)[order])
    n = len(labels)
    split = lost + gained
    d_up = beta.ppf(0.975, split + 1, n - split)
    d_lo = np.where(split > 0, beta.ppf(0.025, np.maximum(split, 1), n - split + 1), 0.0)
    q_up = np.where(lost < split, beta.ppf(0.975, lost + 1, np.maximum(split - lost, 1)), 1.0)
    net = 2 * q_up - 1
    bound = np.where(net >= 0, d_up * net, d_lo * net)
    distinct = np.r_[confidence[order][1:] < confidence[order][:-1], True]
    cand = np.flatnonzero((bound <= margin) & distinct)
    if not len(cand):
        return None, 0
    k = cand.max() + 1
    return float(confidence[order][k - 1]), k / n


def report(name, threshold):
    if threshold is None:
        print(name, "no cascade"); return
    ans = tc.max(axis=1) >= threshold
    pred = np.where(ans, tc.argmax(axis=1), tm.argmax(axis=1))
    print(f"{name}: threshold {threshold:.4f}; test: cheap answers {ans.mean():.1%}, cascade {np.mean(pred == tl):.2%}, "
          f"model {np.mean(tm.argmax(1) == tl):.2%}, cheap alone {np.mean(tc.argmax(1) == tl):.2%}")


old = cascade.choose_threshold(vc, vm, vl)
print("old rule on validation:", {k: round(v, 4) if isinstance(v, float) else v for k, v in old.items()})
report("old", old["threshold"])
thr, cov = net_threshold(vc, vm, vl)
print("net rule validation coverage", cov)
report("net", thr)
