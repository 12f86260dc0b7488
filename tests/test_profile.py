import json

import pandas as pd
from transformers import AutoTokenizer

from critic import data, profile
from critic.cli import main
from critic.text import Encoder


def test_profile_numbers(tmp_path, tiny_bert):
    texts = ["great film<br />", "awful movie", "the plot was very boring and dull", "café", "great film<br />"]
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": texts, "label": [1, 0, 0, 1, 1]}).to_csv(path, index=False)
    summary = profile.profile(data.load(path), Encoder(AutoTokenizer.from_pretrained(tiny_bert)), samples=1)
    assert summary["rows"] == 4 and summary["exact_duplicates_removed"] == 1
    assert summary["duplicates_across_splits"] == 0
    assert summary["share_with_html_tags"] == 0.25 and summary["share_with_non_ascii"] == 0.25
    assert summary["tokens"]["max"] == 9  # [CLS] the plot was very boring and dull [SEP]
    assert summary["share_truncated"]["128"] == 0.0
    json_path, html_path = profile.write(summary, tmp_path / "out")
    assert json.loads(json_path.read_text())["rows"] == 4
    page = html_path.read_text()
    assert page.count("<svg") == 2 and "Truncated by the window" in page


def test_profile_cli(tmp_path, tiny_bert, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"body": f"film {i}", "y": "good" if i % 2 else "bad"}) for i in range(20)))
    code = main(
        [
            "profile",
            str(path),
            "--tokenizer",
            str(tiny_bert),
            "--text-column",
            "body",
            "--label-column",
            "y",
            "--label-map",
            "good=positive,bad=negative",
            "--output",
            str(tmp_path / "p"),
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "p" / "profile.json").read_text())["label_balance"] == {
        "negative": 10,
        "positive": 10,
    }


def test_cli_error_names_the_row(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nok,1\n,0\n")
    assert main(["profile", str(path), "--tokenizer", "none"]) == 2
    assert f"{path}, line 3: empty text (column 'text')" in capsys.readouterr().err
