"""The one hook-name map names hooks the model really has."""

from __future__ import annotations

import pytest

from factcircuits.errors import UserError
from factcircuits.methods import hooks


def test_every_kind_and_alias_names_a_hook_of_the_model(tiny_lm):
    model = tiny_lm.model
    available = set(model.hook_dict)
    last = model.cfg.n_layers - 1
    for kind in [*hooks.HOOK_NAMES, *hooks.ALIASES]:
        assert hooks.hook_name(last, kind) in available, kind
    assert {hooks.EMBED, hooks.FINAL_NORM_SCALE} <= available
    # ROME's names for the restored states
    assert hooks.hook_name(2, "hidden") == "blocks.2.hook_resid_post"
    assert hooks.hook_names("head", [0, 1]) == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]


def test_unknown_kind_is_refused():
    with pytest.raises(UserError, match="hook kind 'resid_mid'"):
        hooks.hook_name(0, "resid_mid")
