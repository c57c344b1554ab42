"""``python -m training.co2``: training CO2 by the paper's method (Appendix B, Table 5).

The paper uses the Machine Learning Impact calculator (Lacoste et al., 2019): energy is hours x
the GPU's power (TDP), and CO2 is that energy x the carbon intensity of the cloud region. The
paper states 250 W (A100 PCIe 40GB) and 0.61 kgCO2eq/kWh (AWS eu-central-1); it does not apply
a data-centre PUE, so ``--pue`` defaults to 1. Examples::

    python -m training.co2 --hours 74.40 --power-w 250 --carbon-intensity 0.61
    python -m training.co2 --table5        # recompute the paper's Table 5 from its epoch times

The Azure and Google intensities (0.57 and 0.62 kg/kWh) are not stated in the paper; they are
the values that reproduce every cell of its Table 5, which ``--table5`` checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PAPER_TABLE5", "co2_kg", "energy_kwh", "main", "table5"]

A100_TDP_W = 250.0
EPOCHS, FOLDS = 200, 5
INTENSITY = {"Azure": 0.57, "Google": 0.62, "Amazon": 0.61}
"""kgCO2eq/kWh per provider: Amazon (eu-central-1) as the paper states; Azure and Google as
reproduce its Table 5."""

PAPER_TABLE5 = {  # model: (epoch seconds, total hours, 5-fold hours, Azure, Google, Amazon kg)
    "UNETR": (262.83, 14.60, 73.01, 10.40, 11.32, 11.13),
    "Segmamba": (321.50, 17.86, 89.31, 12.73, 13.84, 13.62),
    "UNET": (255.80, 14.21, 71.06, 10.13, 11.01, 10.84),
    "SwinUNETR": (321.39, 17.85, 89.28, 12.72, 13.84, 13.61),
    "Segresmamba": (267.83, 14.88, 74.40, 10.60, 11.53, 11.35),
}
"""The paper's Table 5 as printed (BraTS, 200 epochs per fold, 5 folds)."""


def energy_kwh(hours: float, power_w: float, pue: float = 1.0) -> float:
    """Energy drawn: hours x power (kW) x PUE."""
    if hours < 0 or power_w < 0 or pue < 1:
        raise ValueError("hours and power must be >= 0 and PUE >= 1")
    return hours * power_w / 1000.0 * pue


def co2_kg(hours: float, power_w: float, carbon_intensity: float, pue: float = 1.0) -> float:
    """kgCO2eq: energy (kWh) x carbon intensity (kg/kWh)."""
    if carbon_intensity < 0:
        raise ValueError("carbon intensity must be >= 0")
    return energy_kwh(hours, power_w, pue) * carbon_intensity


def table5(power_w: float = A100_TDP_W) -> list[dict]:
    """Table 5 recomputed from each model's epoch time, beside the printed values."""
    rows = []
    for model, (epoch_s, total_h, folds_h, *printed) in PAPER_TABLE5.items():
        hours_per_fold = epoch_s * EPOCHS / 3600
        hours = hours_per_fold * FOLDS
        row = {
            "model": model,
            "epoch_s": epoch_s,
            "hours_per_fold": round(hours_per_fold, 2),
            "hours_5_fold": round(hours, 2),
            "printed_hours": [total_h, folds_h],
        }
        for provider, paper_kg in zip(INTENSITY, printed):
            row[provider] = round(co2_kg(hours, power_w, INTENSITY[provider]), 2)
            row[f"{provider}_paper"] = paper_kg
        rows.append(row)
    return rows


def _table5_markdown(rows: list[dict]) -> str:
    lines = [
        "| Model | Epoch (s) | Hours/fold | 5-fold hours | Azure kg | Google kg | Amazon kg |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[p]:.2f} (paper {r[p + '_paper']:.2f})" for p in INTENSITY]
        lines.append(
            f"| {r['model']} | {r['epoch_s']:.2f} | {r['hours_per_fold']:.2f} | "
            f"{r['hours_5_fold']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.co2",
        description="kgCO2eq of training = hours x power x PUE x carbon intensity (the paper's "
        "Appendix B method, ML Impact calculator).",
    )
    p.add_argument("--hours", type=float, help="training hours (e.g. all folds together)")
    p.add_argument("--power-w", type=float, default=A100_TDP_W, help="GPU power, W (default 250)")
    p.add_argument("--carbon-intensity", type=float, help="kgCO2eq per kWh of the region")
    p.add_argument("--pue", type=float, default=1.0, help="data-centre PUE (paper: none, 1.0)")
    p.add_argument("--table5", action="store_true", help="recompute the paper's Table 5")
    p.add_argument("--out-json", help="also write the result as JSON here")
    args = p.parse_args(argv)
    if args.table5:
        rows = table5(args.power_w)
        result: dict = {
            "method": "hours x power x intensity (paper Appendix B)",
            "power_w": args.power_w,
            "epochs": EPOCHS,
            "folds": FOLDS,
            "intensity_kg_per_kwh": INTENSITY,
            "rows": rows,
        }
        print(_table5_markdown(rows))
    else:
        if args.hours is None or args.carbon_intensity is None:
            p.error("give --hours and --carbon-intensity (or --table5)")
        try:
            kwh = energy_kwh(args.hours, args.power_w, args.pue)
            kg = co2_kg(args.hours, args.power_w, args.carbon_intensity, args.pue)
        except ValueError as error:
            p.error(str(error))
        result = {
            "hours": args.hours,
            "power_w": args.power_w,
            "pue": args.pue,
            "carbon_intensity_kg_per_kwh": args.carbon_intensity,
            "energy_kwh": kwh,
            "co2_kg": kg,
        }
        print(
            f"{args.hours:g} h x {args.power_w:g} W x PUE {args.pue:g} = {kwh:.2f} kWh; "
            f"x {args.carbon_intensity:g} kg/kWh = {kg:.2f} kgCO2eq"
        )
    if args.out_json:
        path = Path(args.out_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
