"""`pgrpo groups fit|assign` end to end on real CSV / JSON lines files: lossless copies, cold start, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pgrpo.cli import main
from pgrpo.groups import GroupDiscovery
from pgrpo.groups.command import GroupsArguments

PROFILE = ["age", "mean_rating_time"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_fit_from_yaml_and_flags_then_cold_start_assign(
    movielens_users: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    us_users = movielens_users[movielens_users["zip_code"].str.isdigit()]  # zip codes such as "01002": all digits
    train, new_users = us_users[us_users["user_id"] <= 800], us_users[us_users["user_id"] > 800]
    data = tmp_path / "users.csv"
    train.to_csv(data, index=False)
    config = tmp_path / "groups.yaml"
    config.write_text(yaml.safe_dump({"features": PROFILE, "kind": "numeric", "num_groups": 3, "seed": 1}))
    model_dir, output = tmp_path / "model", tmp_path / "users.grouped.csv"
    argv = ["groups", "fit", "--config", str(config), "--data", str(data), "--model_dir", str(model_dir)]
    assert main([*argv, "--output", str(output)]) == 0
    assert f"{len(train)} rows in 3 groups (fit silhouette" in capsys.readouterr().out

    # The copy keeps every cell exactly as in the file (zip codes keep leading zeros) and adds the groups.
    original = pd.read_csv(data, dtype=str, keep_default_na=False)
    written = pd.read_csv(output, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(written.drop(columns="group"), original)
    assert written["zip_code"].str.startswith("0").sum() == original["zip_code"].str.startswith("0").sum() > 0
    reference = GroupDiscovery(PROFILE, kind="numeric", num_groups=3, seed=1).fit(train)
    np.testing.assert_array_equal(written["group"].astype(int), reference.train_groups)

    # Cold start: users never seen in fit, from a JSON lines file, get the saved model's nearest centroid.
    records = new_users.to_dict(orient="records")
    new_data, new_output = write_jsonl(tmp_path / "new.jsonl", records), tmp_path / "new.grouped.jsonl"
    argv = ["groups", "assign", "--model_dir", str(model_dir), "--data", str(new_data), "--output", str(new_output)]
    assert main(argv) == 0
    groups = reference.assign(new_users)
    assert read_jsonl(new_output) == [{**record, "group": int(g)} for record, g in zip(records, groups, strict=True)]
    assert f"{len(records)} rows in 3 groups" in capsys.readouterr().out


@pytest.mark.slow  # embeds 2 x 24 reviews with MiniLM
def test_text_fit_and_assign_on_json_lines_reproduce_each_other(
    department_reviews: pd.DataFrame, tmp_path: Path
) -> None:
    reviews = department_reviews.groupby("Department Name").head(8)
    records = [
        {"review": text, "meta": {"department": department, "tags": ["clothing"]}}
        for text, department in zip(reviews["Review Text"], reviews["Department Name"], strict=True)
    ]
    data, model_dir = write_jsonl(tmp_path / "reviews.jsonl", records), tmp_path / "model"
    fitted, assigned = tmp_path / "fit.jsonl", tmp_path / "assign.jsonl"
    fit = ["groups", "fit", "--data", str(data), "--features", "review", "--kind", "text", "--num_groups", "3"]
    assert main([*fit, "--group_column", "taste", "--model_dir", str(model_dir), "--output", str(fitted)]) == 0
    assert (
        main(["groups", "assign", "--model_dir", str(model_dir), "--data", str(data), "--output", str(assigned)]) == 0
    )
    rows = read_jsonl(fitted)
    assert [{key: row[key] for key in ("review", "meta")} for row in rows] == records  # nested values kept
    assert read_jsonl(assigned) == rows  # assign writes the model's column, and the fit labels exactly
    assert sorted({row["taste"] for row in rows}) == [0, 1, 2]
    assert (
        json.loads((model_dir / "groups.json").read_text())["embedding"]["model"]
        == "sentence-transformers/all-MiniLM-L6-v2"
    )


def test_parquet_keeps_arrow_types_and_an_in_place_reassign_needs_overwrite(
    movielens_users: pd.DataFrame, tmp_path: Path
) -> None:
    data, output, model_dir = tmp_path / "users.parquet", tmp_path / "out.parquet", tmp_path / "model"
    movielens_users.to_parquet(data, index=False)
    fit = ["groups", "fit", "--data", str(data), "--features", *PROFILE, "--kind", "numeric", "--num_groups", "2"]
    assert main([*fit, "--model_dir", str(model_dir), "--output", str(output)]) == 0
    fitted = pq.read_table(output)
    assert fitted.drop_columns(["group"]).equals(pq.read_table(data))
    assert fitted.schema.field("group").type == pa.int64()
    assign = ["groups", "assign", "--model_dir", str(model_dir), "--data", str(output), "--output", str(output)]
    with pytest.raises(FileExistsError, match="--overwrite true"):
        main(assign)
    assert main([*assign, "--overwrite", "true"]) == 0
    assert pq.read_table(output).equals(fitted)  # same labels, the column replaced where it was


def test_existing_files_and_bad_options_are_refused_before_any_work(
    movielens_users: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "users.jsonl"
    write_jsonl(data, movielens_users.head(50).to_dict(orient="records"))
    output, model_dir = tmp_path / "out.jsonl", tmp_path / "model"
    fit = [
        "groups",
        "fit",
        "--data",
        str(data),
        "--kind",
        "numeric",
        "--num_groups",
        "2",
        "--model_dir",
        str(model_dir),
    ]

    output.write_text("precious\n")
    with pytest.raises(FileExistsError, match="--overwrite true"):
        main([*fit, "--features", "age", "--output", str(output)])
    assert output.read_text() == "precious\n" and not model_dir.exists()

    with pytest.raises(ValueError, match=r"no column\(s\) \['income'\]"):
        main([*fit, "--features", "income", "--output", str(tmp_path / "a.jsonl")])
    with pytest.raises(ValueError, match="same extension"):
        main([*fit, "--features", "age", "--output", str(tmp_path / "a.csv")])
    with pytest.raises(ValueError, match="already has a column 'occupation'"):
        main([*fit, "--features", "age", "--group_column", "occupation", "--output", str(tmp_path / "a.jsonl")])
    with pytest.raises(ValueError, match="num_groups=60 but the data has only 50 rows"):
        main([*fit, "--features", "age", "--num_groups", "60", "--output", str(tmp_path / "a.jsonl")])
    with pytest.raises(ValueError, match="needs --features"):
        main([*fit, "--output", str(tmp_path / "a.jsonl")])
    with pytest.raises(ValueError, match="Give an action"):
        main(["groups", "--data", str(data)])
    with pytest.raises(SystemExit):
        main([*fit, "--features", "age", "--kind", "categorical", "--output", str(tmp_path / "a.jsonl")])
    with pytest.raises(FileNotFoundError, match="not a group model directory"):
        main(
            [
                "groups",
                "assign",
                "--model_dir",
                str(tmp_path),
                "--data",
                str(data),
                "--output",
                str(tmp_path / "a.jsonl"),
            ]
        )
    assert not model_dir.exists() and not (tmp_path / "a.jsonl").exists()

    assert main([*fit, "--features", "age", "--output", str(output), "--overwrite", "true"]) == 0
    expected = GroupDiscovery(["age"], kind="numeric", num_groups=2).fit(movielens_users.head(50)).train_groups
    assert [row["group"] for row in read_jsonl(output)] == expected.tolist()


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["groups", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in GroupsArguments.__dataclass_fields__:
        assert f"--{name}" in text
    assert "silhouette" in text and "JSON lines" in text
