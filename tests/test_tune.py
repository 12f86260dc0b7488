import json

import pandas as pd
import pytest
import tomllib

from critic import config
from critic.cli import main
from critic.training.tune import TuneOptions, resolution, trial_settings, tune


def base(model, data, output, **extra):
    settings = dict(
        model=str(model),
        data=str(data),
        preset="gpu",
        max_length=32,
        batch_size=32,
        lr=3e-3,
        device="cpu",
        output=str(output),
    )
    return config.build({**settings, **extra})


def test_search_writes_table_plots_best_settings_and_mlflow_runs(tiny_bert, tmp_path):
    import synthetic

    data = tmp_path / "toy.csv"
    synthetic.reviews(600).to_csv(data, index=False)
    out = tmp_path / "search"
    options = TuneOptions(trials=3, space=("lr", "epochs", "head_share"))
    said = []
    result = tune(base(tiny_bert, data, out, train_size=400, eval_size=50), options, log=said.append)
    assert any("validation on 50 reviews: trials within about ±9.9%" in line for line in said)
    assert round(resolution(500), 3) == 0.031 and resolution(4879) < 0.011
    assert result["complete"] >= 1 and 0.5 <= result["best_value"] <= 1.0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and {"params_lr", "params_epochs", "params_head_share"} <= set(trials.columns)
    best = tomllib.loads((out / "best.toml").read_text())["train"]
    assert best["model"] == str(tiny_bert) and 1 <= best["epochs"] <= 5 and best["truncation"] == "head+tail"
    assert config.build(best).lr == best["lr"]  # critic train --config takes it
    assert "train_size" not in best and "searched on 400 training reviews" in (out / "best.toml").read_text()
    page = (out / "tune.html").read_text()
    assert "plotly" in page and "params_lr" in page
    assert not list(out.glob("trial-*/run/*.safetensors")) and not list(out.glob("trial-*/run/checkpoint"))

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[f"critic-tune-{out.name}"])
    assert len(runs) == 3 and runs["params.lr"].notna().all()
    # started again with more trials: goes on from the three it has
    more = tune(
        base(tiny_bert, data, out, train_size=400, eval_size=50),
        TuneOptions(trials=4, space=("lr", "epochs", "head_share")),
        log=lambda line: None,
    )
    continued = pd.read_csv(out / "trials.csv")
    assert len(continued) == 4 and more["complete"] >= result["complete"]
    assert continued["params_lr"].iloc[3] not in set(continued["params_lr"].iloc[:3])  # new settings, not a rerun
    with pytest.raises(ValueError, match="holds a search with other settings \\(max_length\\)"):
        tune(base(tiny_bert, data, out, train_size=400, eval_size=50, max_length=48), options, log=lambda line: None)


def test_cross_validated_search_from_the_cli(tiny_bert, tmp_path):
    import synthetic

    data = tmp_path / "toy.csv"
    synthetic.reviews(400).to_csv(data, index=False)
    out = tmp_path / "cv"
    assert (
        main(
            [
                "tune",
                "--model",
                str(tiny_bert),
                "--data",
                str(data),
                "--preset",
                "gpu",
                "--max-length",
                "32",
                "--epochs",
                "1",
                "--lr",
                "3e-3",
                "--device",
                "cpu",
                "--trials",
                "1",
                "--folds",
                "2",
                "--space",
                "weight_decay,dropout,layer_decay",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "trial-0000").iterdir()) == ["fold-1", "fold-2"]
    folds = [
        json.loads((out / "trial-0000" / f / "critic.json").read_text())["config"]["fold"] for f in ("fold-1", "fold-2")
    ]
    assert folds == ["1/2", "2/2"]
    assert main(["tune", "--space", "colour", "--output", str(tmp_path / "x")]) == 2


def test_head_share_becomes_head_tokens():
    cfg = config.build({"preset": "gpu", "max_length": 256})
    assert trial_settings(cfg, {"head_share": 0.25, "max_length": 512}) == {
        "max_length": 512,
        "truncation": "head+tail",
        "head_tokens": 128,
    }
    assert trial_settings(cfg, {"head_share": 0.5}) == {"truncation": "head+tail", "head_tokens": 128}


def test_a_trial_left_running_by_a_stopped_search_is_run_again(tiny_bert, tmp_path):
    import optuna
    import synthetic
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    data = tmp_path / "toy.csv"
    synthetic.reviews(300).to_csv(data, index=False)
    out = tmp_path / "stopped"
    out.mkdir()
    study = optuna.create_study(
        study_name="critic",
        storage=JournalStorage(JournalFileBackend(str(out / "optuna.journal"))),
        direction="maximize",
    )
    stale = study.ask()  # as a search killed mid-trial leaves it: RUNNING for ever
    lr = stale.suggest_float("lr", 1e-5, 2e-4, log=True)
    lines = []
    tune(base(tiny_bert, data, out, epochs=1), TuneOptions(trials=1, space=("lr",)), log=lines.append)
    trials = pd.read_csv(out / "trials.csv")
    assert trials["state"].tolist() == ["FAIL", "COMPLETE"] and trials["params_lr"].tolist() == [lr, lr]
    assert any("trial 0 was interrupted" in line for line in lines)
