"""`factcircuits inspect --json` on the embedded model (the foundation issue's acceptance)."""

import json

import pytest

from factcircuits.cli import main


@pytest.mark.embedded
def test_inspect_json_top_token_is_paris(capsys):
    code = main(["inspect", "--model", "default", "--prompt", "The capital of France is",
                 "--answer", " Paris", "--counterfactual", " Rome", "--k", "5", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["top_tokens"][0]["token"] == " Paris"
    assert len(result["top_tokens"]) == 5
    assert result["logit_diff"] > 0 and 0 < result["p_answer"] <= 1


def test_inspect_rejects_bad_k_in_one_line(capsys):
    assert main(["inspect", "--model", "tiny", "--prompt", "x", "--k", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--k 0" in err
