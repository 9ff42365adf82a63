import pytest

from model.zoo import SHIPPED_WEIGHTS_DIR, SPECS, NoWeightsError, UnknownModelError, list_models, load_model


def test_unknown_model_lists_the_choices():
    with pytest.raises(UnknownModelError, match="unknown model 'edsr'; choose one of srresnet, srgan"):
        load_model("edsr")


def test_unsupported_scale():
    with pytest.raises(UnknownModelError, match="does not support scale 3"):
        load_model("srresnet", 3)


def test_architecture_without_weights_is_reported_not_run(tmp_path):
    with pytest.raises(NoWeightsError, match="srresnet.*has no weights"):
        load_model("srresnet", 2, dirs=[tmp_path])


def test_weightless_models_always_load():
    for name in ("bicubic", "bilinear", "nearest"):
        m = load_model(name, 4)
        assert m.version == "builtin" and m.card is None


@pytest.mark.parametrize("name", ["srresnet", "espcn", "srcnn"])
def test_shipped_weights_load_and_match_their_card(name):
    m = load_model(name, 4)
    assert m.card.arch == SPECS[name].arch and m.card.scale == 4
    assert m.path.parent == SHIPPED_WEIGHTS_DIR
    assert m.path.stat().st_size < 10_000_000
    assert len(m.version) == 64


def test_list_models_says_what_has_weights(tmp_path):
    rows = {(r["name"], r["scale"]): r for r in list_models(dirs=[tmp_path])}
    assert rows[("bicubic", 4)]["has_weights"] is True
    assert rows[("srresnet", 4)]["has_weights"] is False
    shipped = {(r["name"], r["scale"]): r for r in list_models()}
    assert shipped[("srresnet", 4)]["has_weights"] is True


def test_weights_dir_setting_takes_precedence(tmp_path, monkeypatch):
    import shutil

    for suffix in (".safetensors", ".json"):
        shutil.copy(SHIPPED_WEIGHTS_DIR / f"espcn_x4{suffix}", tmp_path / f"espcn_x4{suffix}")
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path))
    assert load_model("espcn", 4).path.parent == tmp_path
