"""Committee spread against actual force errors on the bundled methanol data.

Trains a committee of K BP models (``training.ensemble: K``) on 300 K frames of
``data/methanol_dft.xyz`` (PBE/def2-SVP), holding out 30 of the 100 300 K frames,
then evaluates the committee on the held-out 300 K frames and on the 450 K and
600 K frames (hotter, so further from the training data). Per structure:

* spread = RMS over atoms and components of ``calc.results["forces_std"]`` (eV/Å);
* error  = RMS over atoms and components of F_mean − F_DFT (eV/Å).

Reports Pearson and Spearman correlations of spread and error (held-out 300 K alone,
and all 230 evaluation structures), the mean spread and error per temperature, the
calibration ratio RMS(error)/RMS(spread), and the spread along an O–H bond stretch
(no reference: pure extrapolation). Writes ``OUT/committee_results.json`` and the
figure (``--figure``)::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/committee.py \\
        [--members 4] [--epochs 800] [--hidden 64 64] [--out runs/committee_bench] \\
        [--figure docs/figures/committee_spread.png]

Rerunning with the same ``--out`` reuses the trained members (resume).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np
from scipy import stats

import atomnet
from atomnet.training import train_committee
from atomnet.training.config import config_from_dict

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
TEMPERATURES = (300, 450, 600)
N_HELD_OUT = 30


def split_frames(seed: int = 0) -> dict[str, list]:
    """Training 300 K frames, held-out 300 K frames, and the 450 K and 600 K frames."""
    frames = ase.io.read(DATA / "methanol_dft.xyz", ":")
    by_t = {t: [a for a in frames if round(a.info["temperature_K"]) == t] for t in TEMPERATURES}
    order = np.random.default_rng(seed).permutation(len(by_t[300]))
    cold = [by_t[300][i] for i in order]
    return {"train": cold[N_HELD_OUT:], "300 K": cold[:N_HELD_OUT],
            "450 K": by_t[450], "600 K": by_t[600]}


def make_config(out: Path, train_file: Path, test_file: Path, args) -> object:
    raw = {
        "data": {"train": str(train_file), "test": str(test_file), "valid_fraction": 0.15,
                 "isolated_atoms": str(DATA / "methanol_isolated_atoms.xyz")},
        "model": {"type": "bpnn", "cutoff": 5.0, "angular_cutoff": 3.5,
                  "hidden": list(args.hidden), "activation": "silu"},
        "training": {"epochs": args.epochs, "batch_size": 8, "lr": 3e-3, "seed": 0,
                     "dtype": "float32", "ensemble": args.members,
                     "max_time_minutes": args.member_minutes},
        "output": {"dir": str(out), "progress": False, "log_every": 100},
    }
    return config_from_dict(raw, "benchmarks/committee.py", out)


def per_structure(calc, frames) -> dict[str, np.ndarray]:
    """Spread and error (eV/Å, RMS over components) and energy spread/error (eV)."""
    rows = []
    for atoms in frames:
        f_ref, e_ref = atoms.get_forces(), atoms.get_potential_energy()
        calc.calculate(atoms, ["energy", "forces"])
        r = calc.results
        member_err = np.sqrt(((r["forces_members"] - f_ref) ** 2).mean(axis=(1, 2)))
        rows.append((np.sqrt((r["forces_std"] ** 2).mean()),
                     np.sqrt(((r["forces"] - f_ref) ** 2).mean()),
                     member_err.mean(), r["energy_std"], abs(r["energy"] - e_ref)))
    cols = np.array(rows).T
    keys = ("spread", "error", "member_error", "energy_std", "energy_error")
    return dict(zip(keys, cols, strict=True))


def correlation(spread: np.ndarray, error: np.ndarray) -> dict[str, float]:
    return {"pearson": float(stats.pearsonr(spread, error)[0]),
            "spearman": float(stats.spearmanr(spread, error)[0]), "n": int(len(spread))}


def hydroxyl(atoms) -> tuple[int, int]:
    """Indices of the O atom and of the H nearest to it."""
    symbols = atoms.get_chemical_symbols()
    o = symbols.index("O")
    h = min((i for i, s in enumerate(symbols) if s == "H"),
            key=lambda i: atoms.get_distance(o, i))
    return o, h


def oh_scan(calc, atoms, distances: np.ndarray) -> dict[str, list[float]]:
    """Committee spread while the hydroxyl H is moved along the O–H bond."""
    o, h = hydroxyl(atoms)
    unit = atoms.positions[h] - atoms.positions[o]
    unit /= np.linalg.norm(unit)
    out = {"r_OH": [], "forces_std_max": [], "spread": [], "energy_std": []}
    for r in distances:
        probe = atoms.copy()
        probe.positions[h] = probe.positions[o] + r * unit
        calc.calculate(probe, ["energy", "forces"])
        res = calc.results
        out["r_OH"].append(float(r))
        out["forces_std_max"].append(res["forces_std_max"])
        out["spread"].append(float(np.sqrt((res["forces_std"] ** 2).mean())))
        out["energy_std"].append(res["energy_std"])
    return out


def figure(sets: dict, scan: dict, oh_range: tuple[float, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    colours = {"300 K": "tab:blue", "450 K": "tab:orange", "600 K": "tab:red"}
    for name, values in reversed(sets.items()):  # held-out 300 K drawn last, on top
        a.scatter(values["spread"] * 1e3, values["error"] * 1e3, s=12, alpha=0.7,
                  color=colours[name], label=f"{name}{' (held out)' if name == '300 K' else ''}")
    lo = min(v["spread"].min() for v in sets.values()) * 1e3
    hi = max(v["error"].max() for v in sets.values()) * 1e3
    a.plot([lo, hi], [lo, hi], "k:", lw=1, label="error = spread")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("committee force spread, RMS of forces_std (meV/Å)")
    a.set_ylabel("force error of the mean, RMS (meV/Å)")
    handles, labels = a.get_legend_handles_labels()
    a.legend(handles[::-1], labels[::-1], fontsize=8)
    a.set_title("per structure, trained on 300 K")
    b.axvspan(*oh_range, color="tab:blue", alpha=0.15, label="O–H range in training")
    b.plot(scan["r_OH"], np.array(scan["forces_std_max"]) * 1e3, "o-", ms=3,
           label="forces_std_max")
    b.set_yscale("log")
    b.set_xlabel("O–H distance (Å)")
    b.set_ylabel("committee spread (meV/Å)")
    b.set_title("O–H bond stretch (no reference)")
    b.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=800)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--member-minutes", type=float, default=2.5,
                        help="training.max_time_minutes of each member")
    parser.add_argument("--out", default=str(REPO / "runs" / "committee_bench"))
    parser.add_argument("--figure", default=str(REPO / "docs" / "figures" /
                                                "committee_spread.png"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    frames = split_frames()
    files = {}
    for name in ("train", "300 K"):
        files[name] = out / f"{name.replace(' ', '')}.xyz"
        ase.io.write(files[name], frames[name], format="extxyz")
    config = make_config(out, files["train"], files["300 K"], args)

    start = time.perf_counter()
    results = train_committee(config)
    train_s = time.perf_counter() - start

    calc = atomnet.Calculator(out, dtype="float64")
    start = time.perf_counter()
    sets = {name: per_structure(calc, frames[name]) for name in ("300 K", "450 K", "600 K")}
    eval_s = time.perf_counter() - start
    pooled = {k: np.concatenate([v[k] for v in sets.values()]) for k in ("spread", "error")}
    held = sets["300 K"]
    oh = [a.get_distance(*hydroxyl(a)) for a in frames["train"]]
    scan = oh_scan(calc, frames["300 K"][0], np.linspace(0.8, 1.8, 21))

    summary = {
        "members": args.members, "epochs": args.epochs, "hidden": args.hidden,
        "n_train_and_valid": len(frames["train"]), "n_held_out_300K": N_HELD_OUT,
        "members_trained_this_run": sum(bool(r.state.history) for r in results),
        "train_s": train_s, "eval_s": eval_s,
        "member_test_forces_mae_meV_per_A": [r.metrics["test"]["forces_mae"] for r in results],
        "correlation_held_out_300K": correlation(held["spread"], held["error"]),
        "correlation_all": correlation(pooled["spread"], pooled["error"]),
        "per_temperature": {
            name: {"mean_spread_meV_per_A": 1e3 * float(v["spread"].mean()),
                   "mean_error_meV_per_A": 1e3 * float(v["error"].mean()),
                   "mean_member_error_meV_per_A": 1e3 * float(v["member_error"].mean()),
                   "mean_energy_std_meV": 1e3 * float(v["energy_std"].mean()),
                   "mean_energy_error_meV": 1e3 * float(v["energy_error"].mean()),
                   "correlation": correlation(v["spread"], v["error"])}
            for name, v in sets.items()},
        "calibration_error_over_spread_300K": float(
            np.sqrt((held["error"] ** 2).mean() / (held["spread"] ** 2).mean())),
        "oh_training_range_A": [float(min(oh)), float(max(oh))],
        "oh_scan": scan,
    }
    (out / "committee_results.json").write_text(json.dumps(summary, indent=2))
    figure(sets, scan, (min(oh), max(oh)), Path(args.figure))
    print(json.dumps({k: v for k, v in summary.items() if k != "oh_scan"}, indent=2))
    print("O–H scan (Å: forces_std_max meV/Å):",
          ", ".join(f"{r:.2f}: {1e3 * s:.0f}" for r, s in
                    zip(scan["r_OH"], scan["forces_std_max"], strict=True)))


if __name__ == "__main__":
    main()
