"""livar-bench as a Flower App: the harness's ServerApp and ClientApp (livar_bench.flower)."""
