"""The parameter model: each notebook keeps its own defaults, shared names mean one thing,
values keep their types, and run.json records what each notebook ran with."""

from __future__ import annotations

from pathlib import Path

import pytest

from factcircuits.errors import UserError
from factcircuits.run import parameters
from factcircuits.run.folders import default_notebooks_dir
from factcircuits.run.notebooks import Notebook, discover_notebooks

ANALYSIS = discover_notebooks(default_notebooks_dir())


def test_shared_parameter_names_mean_one_thing():
    """A name declared by two notebooks has one default and one type everywhere."""
    for name, owners in parameters.declared(ANALYSIS).items():
        values = {(type(nb.defaults[name]).__name__, repr(nb.defaults[name])) for nb in owners}
        assert len(values) == 1, f"{name}: {[(nb.name, nb.defaults[name]) for nb in owners]}"


def test_core_defaults_match_the_library():
    library = parameters.core_defaults()
    for nb in ANALYSIS:
        for name, value in nb.defaults.items():
            if name in library:
                assert value == library[name] and type(value) is type(library[name]), \
                    f"{nb.name}: {name}={value!r}, library {library[name]!r}"
    # every notebook declares the parameters that decide what is analysed
    deciding = {"model", "dataset", "task", "prompt_format", "n_prompts", "seed"}
    for nb in ANALYSIS:
        assert deciding <= set(nb.defaults), nb.name


def _nb(name, **defaults):
    return Notebook(path=Path(f"{name}.py"), defaults=defaults)


def test_a_notebook_keeps_its_own_defaults_for_what_the_user_did_not_set():
    trace = _nb("05_trace", model="default", seed=0, trace_window=10)
    knock = _nb("06_knock", model="default", seed=0, knockout_window=0)
    core = parameters.core_values([trace, knock])
    assert core == {"model": "default", "seed": 0}
    given = parameters.validate_given({"trace_window": 5, "seed": 3}, [trace, knock])
    assert parameters.for_notebook(trace, core, given) == {"model": "default", "seed": 3,
                                                          "trace_window": 5}
    assert parameters.for_notebook(knock, core, given) == {"model": "default", "seed": 3}
    injected = parameters.for_notebook(knock, core, given)
    assert parameters.effective(knock, injected) == {"model": "default", "seed": 3,
                                                     "knockout_window": 0}


def test_values_keep_their_types():
    assert parameters.check_value("max_patches", 8, "auto") == 8
    assert isinstance(parameters.check_value("max_patches", 8, "auto"), int)
    assert parameters.check_value("max_patches", "auto", "auto") == "auto"
    assert parameters.check_value("noise_scale", 2, 3.0) == 2.0
    assert isinstance(parameters.check_value("noise_scale", 2, 3.0), float)
    for key, value, default in [("n_prompts", "8", 0), ("n_prompts", 2.5, 0),
                                ("heads_by_position", 1, False), ("task", 3, "cloze"),
                                ("n_prompts", True, 0)]:
        with pytest.raises(UserError, match=f"parameter {key}="):
            parameters.check_value(key, value, default)


def test_unknown_and_disagreeing_core_parameters_are_refused():
    a, b = _nb("01_a", seed=0), _nb("02_b", seed=1)
    with pytest.raises(UserError, match="core parameter seed: 01_a declares 0 but 02_b 1"):
        parameters.core_values([a, b])
    with pytest.raises(UserError, match="unknown parameter 'window'"):
        parameters.validate_given({"window": 3}, [a])


def test_every_parameter_has_a_domain_next_to_its_default():
    """One declaration holds each parameter's default and domain; the notebooks and the
    library agree with it, and every default lies inside its own domain."""
    DOMAINS = parameters.declared_parameters()

    for nb in ANALYSIS:
        for name, value in nb.defaults.items():
            if name in parameters.RESERVED:
                continue
            assert name in DOMAINS, f"{nb.name}: {name} has no declared domain"
            assert value == DOMAINS[name].default and \
                type(value) is type(DOMAINS[name].default), f"{nb.name}: {name}={value!r}"
    for name, value in parameters.core_defaults().items():
        if name not in parameters.RESERVED:
            assert DOMAINS[name].default == value, name
    for name, domain in DOMAINS.items():
        assert domain.ok(domain.default), name


def test_domains_mirror_the_library_constants():
    from factcircuits.data.datasets import TASKS
    from factcircuits.methods.evaluate import KNOWN_CRITERIA
    from factcircuits.models.loading import DTYPES
    from factcircuits.models.tokens import BOS_CHOICES, PROMPT_FORMATS
    from factcircuits.results import parameter_declarations as declared

    assert declared.DTYPE_NAMES == tuple(DTYPES)
    assert declared.PROMPT_FORMATS == PROMPT_FORMATS
    assert declared.BOS_CHOICES == BOS_CHOICES
    assert declared.KNOWN == KNOWN_CRITERIA
    assert set(declared.TASKS) == set(TASKS)


@pytest.mark.parametrize("name, inside, outside", [
    ("seed", [0, 2**32 - 1], [-1, 2**32, 1.5, True, None]),
    ("noise_scale", [0.5, 3, 10.0], [0, -1.0, float("nan"), float("inf"), "3", None]),
    ("max_patches", ["auto", 1, 64], [0, -3, "all", None]),
    ("n_components", [1, 6], [0, -1]),
    ("trace_metric", ["prob", "task"], ["probs", "", None]),
    ("knockout_window", [0, 3], [-1]),
])
def test_domains_refuse_what_is_outside(name, inside, outside):
    for value in inside:
        parameters.check_domain(name, value)
    for value in outside:
        with pytest.raises(UserError, match=f"^{name}=.*: "):
            parameters.check_domain(name, value)


def test_a_repeated_p_name_is_refused():
    from factcircuits.commands.run import parse_assignments

    assert parse_assignments(["seed=1", "n_prompts=2"]) == {"seed": "1", "n_prompts": "2"}
    with pytest.raises(UserError, match="-p seed is given twice"):
        parse_assignments(["seed=1", "n_prompts=2", " seed =1"])


@pytest.mark.parametrize(("typed", "default", "expected"), [
    ("8", 0, 8), ("-3", 0, -3), ("0", 5, 0), ("true", False, True), ("False", True, False),
    ("2.5", 3.0, 2.5), ("3", 3.0, 3.0), ("1e-3", 3.0, 0.001),
    ("yes", "", "yes"), ("True", "", "True"), ("1:30", "", "1:30"), ("010", "", "010"),
    ("7", "auto", 7), ("auto", "auto", "auto"),
])
def test_a_typed_value_takes_its_parameters_type(typed, default, expected):
    from factcircuits.run.parameters import CommandLineText, check_value

    value = check_value("x", CommandLineText(typed), default)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("typed", "default", "message"), [
    ("010", 0, "x=010: expected a whole number like 0"),  # YAML: 8 (octal)
    ("1:30", 0, "x=1:30: expected a whole number"),  # YAML: 90 (sexagesimal)
    ("1e3", 0, "x=1e3: expected a whole number"), ("2.0", 0, "x=2.0: expected a whole number"),
    ("yes", False, "x=yes: use true or false"), ("1", False, "x=1: use true or false"),
    ("ten", 3.0, "x=ten: expected a number"), ("nan", 3.0, "x=nan: expected a number"),
])
def test_a_typed_value_that_is_not_its_type_is_refused_by_name(typed, default, message):
    from factcircuits.run.parameters import CommandLineText, check_value

    with pytest.raises(UserError, match=f"^parameter {message}"):
        check_value("x", CommandLineText(typed), default)


def test_flags_and_params_that_disagree_or_repeat_are_refused(tmp_path):
    import argparse

    from factcircuits.commands.run import load_params_file, overrides_from_args

    def args(**given):
        base = {"params": None, "param": [], "task": None, "device": None, "model": None,
                "dataset": None}
        return argparse.Namespace(**(base | given))

    with pytest.raises(UserError, match="^--device cpu and -p device=cuda disagree"):
        overrides_from_args(args(device="cpu", param=["device=cuda"]))
    with pytest.raises(UserError, match="^--model tiny and -p model=default disagree"):
        overrides_from_args(args(model="tiny", param=["model=default"]))
    assert overrides_from_args(args(task="cloze", param=["task=cloze"]))["task"] == "cloze"
    twice = tmp_path / "p.yaml"
    twice.write_text("seed: 1\nn_prompts: 2\nseed: 3\n")
    with pytest.raises(UserError, match="'seed' is given twice \\(line 3\\)"):
        load_params_file(str(twice))
    both = tmp_path / "q.yaml"
    both.write_text("seed: 1\n")
    with pytest.raises(UserError, match="seed is set both in --params"):
        overrides_from_args(args(params=str(both), param=["seed=2"]))


def test_only_undeclared_secret_names_are_refused_as_secrets():
    from factcircuits.run.parameters import validate_given

    # a notebook declaring one parameter whose name contains "token"
    owners_nb = type("NB", (), {"defaults": {"drop_multi_token_answers": True}, "name": "x"})()
    assert validate_given({"drop_multi_token_answers": False}, [owners_nb]) == \
        {"drop_multi_token_answers": False}
    with pytest.raises(UserError, match="api_key: secrets are read from the environment"):
        validate_given({"api_key": "x"}, [owners_nb])
    with pytest.raises(UserError, match="hf_token: secrets are read from the environment"):
        validate_given({"hf_token": "x"}, [owners_nb])
    for name in ("monkey", "max_tokens_shown"):
        with pytest.raises(UserError, match=f"unknown parameter '{name}'"):
            validate_given({name: 5}, [owners_nb])
