"""``livar-bench explain``: derive LIVAR's LoRA weighting rule from SHAP attributions.

Writes into OUT (default results/explain/):

    samples.csv          one row per probed (round, client, LoRA module): signals, positions, outcome
    shap_values.csv/.npz SHAP value of every feature for every sample, base value, predictions
    surrogate.json       surrogate model, held-out R^2, feature list
    rule.json            the derived rule ("livar-rule/1"; use it with `run --livar-rule OUT/rule.json`)
    comparison.csv/.md   derived bucket table beside the paper's
    shap_summary.png, shap_dependence_{a,b}.png, rule_tables.png
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.cli import options as o


@app.command()
@o.run_options
def explain(
    rounds: int | None = typer.Option(None, help="FedAvg rounds to collect samples from (default 1)."),
    seed: int | None = typer.Option(None, help="Seed for partition, init, data order, held-out split and probes "
                                    "(default 0)."),
    config: o.Config = None,
    val_fraction: float = typer.Option(0.1, help="Seeded fraction of each client's data held out to score merges."),
    max_val_samples: int | None = typer.Option(512, help="Cap on the held-out set (probe cost is linear in it)."),
    probe_pairs: int | None = typer.Option(None, help="(client, module) pairs probed per round (seeded subset; default all)."),
    probe_step: float = typer.Option(0.5, help="Log-weight step s of the central-difference probe."),
    surrogate: str = typer.Option("gbr", help="Surrogate model: gbr (gradient boosting) or rf (random forest)."),
    contrast: float | None = typer.Option(None, help="Largest/smallest bucket weight of the derived rule (default: the paper's, 5.06)."),
    out: Path = typer.Option(Path("results/explain"), help="Folder for the rule, SHAP values, tables and plots."),
    settings: dict | None = None,
) -> None:
    """Derive LIVAR's LoRA weighting rule with SHAP and compare it with the paper's.

    Example: livar-bench explain --dataset digits --backbone livar_tiny_vit --alpha 0.2 --seed 0 --out results/explain/
    """
    import numpy as np
    from rich.table import Table

    from livar_bench.cli.ui import console
    from livar_bench.config import make_spec
    from livar_bench.explain.collect import ProbeSettings, collect
    from livar_bench.explain.rule import (
        PAPER_CONTRAST,
        comparison_frame,
        derive_rule,
        markdown_table,
        rank_agreement,
    )
    from livar_bench.explain.surrogate import SurrogateSettings, fit_and_explain, shap_frame
    from livar_bench.store import write_csv, write_json

    values = o.spec_values(config, {**(settings or {}), **o.run_settings(rounds=rounds, seed=seed)})
    values.setdefault("rounds", 1)  # one round already gives clients x modules samples; more is opt-in
    values["method"] = "fedavg"  # the merge every probe is taken around
    values["val_fraction"] = val_fraction  # held-out split that scores the probed merges
    spec = make_spec(values)
    probe = ProbeSettings(max_val_samples, probe_pairs, probe_step)
    surrogate_settings = SurrogateSettings(model=surrogate, seed=spec.seed)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()

    def on_event(event: str, **info: object) -> None:
        if event == "probe":
            console.print(f"round {info['round']}: probing {info['pairs']} (client, module) pairs", highlight=False)
        elif event == "round":
            m = info["metrics"]
            console.print(f"round {info['round']}: FedAvg test acc {m['acc']:.4f}, held-out loss "
                          f"{info['val_loss']:.4f}", highlight=False)

    collection = collect(spec, probe, on_event=on_event)
    t1 = time.perf_counter()
    table = collection.table
    write_csv(out / "samples.csv", table)
    attribution = fit_and_explain(table, surrogate_settings)

    frame = shap_frame(table, attribution)
    write_csv(out / "shap_values.csv", frame)
    np.savez(out / "shap_values.npz", values=attribution.values, features=np.array(attribution.features),
             expected_value=attribution.expected_value, prediction=attribution.prediction,
             outcome=table["outcome"].to_numpy())
    write_json(out / "surrogate.json", {
        "model": attribution.model, "features": list(attribution.features), "r2_test": attribution.r2_test,
        "r2_train": attribution.r2_train, "n_train": attribution.n_train, "n_test": attribution.n_test,
        "expected_value": attribution.expected_value, "settings": surrogate_settings.__dict__,
    })
    clients_per_round = max(1, int(table.groupby("round")["client"].nunique().max()))
    provenance = {**collection.info, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "command": "livar-bench explain", "collect_seconds": round(t1 - t0, 2)}
    derived = derive_rule(table, attribution, num_clients=clients_per_round,
                          contrast=contrast if contrast is not None else PAPER_CONTRAST, provenance=provenance)
    derived.rule.save(out / "rule.json")
    comparison = comparison_frame(derived)
    write_csv(out / "comparison.csv", comparison)
    agreement = rank_agreement(comparison)
    note = (f"Surrogate {attribution.model}: held-out R^2 {attribution.r2_test:.3f} on {attribution.n_test} samples "
            f"({len(table)} in all). Spearman rank agreement with the paper's table: {agreement:.3f}.\n\n"
            f"Outcome: {collection.info['outcome']}.\n\n")
    (out / "comparison.md").write_text(f"# Derived LIVAR rule vs the paper's\n\n{note}{markdown_table(comparison)}")
    from livar_bench.explain.plots import save_all

    pictures = save_all(attribution, table, derived, out)

    shown = Table("B bucket", "A bucket", "n", "derived offset", "derived weight", "paper offset", "paper weight",
                  title=f"LIVAR bucket weights (derived base {derived.rule.base:.5f}, paper base "
                        f"{comparison['paper_weight'].iloc[4] - comparison['paper_offset'].iloc[4]:.5f})")
    for r in comparison.itertuples():
        shown.add_row(r.b_bucket, r.a_bucket, str(r.n_samples), f"{r.derived_offset:+.5f}", f"{r.derived_weight:.5f}",
                      f"{r.paper_offset:+.5f}", f"{r.paper_weight:.5f}")
    console.print(shown)
    console.print(
        f"surrogate {attribution.model}: held-out R^2 {attribution.r2_test:.3f} (train {attribution.r2_train:.3f}), "
        f"{len(table)} samples; rank agreement with the paper {agreement:.3f}", highlight=False)
    if attribution.r2_test < 0.1:
        console.print("note: the surrogate explains little of the outcome; the derived table is weakly supported "
                      "(collect more samples: more --rounds, --clients or a larger --max-val-samples)", highlight=False)
    typer.echo(f"rule written to {out / 'rule.json'}; SHAP values, comparison and {len(pictures)} plots in {out}")
    typer.echo(f"use it: livar-bench run --method livar --livar-rule {out / 'rule.json'} ...")
    write_json(out / "explain.json", {**provenance, "outputs": sorted(p.name for p in out.iterdir())})
