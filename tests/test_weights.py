import json

import pytest
import torch
from safetensors.torch import save_file

from model.archs import ESPCN, SRResNet
from model.weights import ModelCard, WeightsError, load_card, load_weights, save_weights


def _save_espcn(tmp_path, name="espcn_x4"):
    torch.manual_seed(0)
    net = ESPCN(scale=4)
    card = ModelCard(name="espcn", arch="espcn", scale=4, arch_params={"scale": 4})
    save_weights(net, tmp_path / name, card)
    return net, tmp_path / f"{name}.safetensors"


def test_round_trip_and_card(tmp_path):
    net, path = _save_espcn(tmp_path)
    loaded, card = load_weights(path)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert card.num_params == sum(p.numel() for p in net.parameters())
    assert len(card.sha256) == 64 and card.created
    assert json.loads(path.with_suffix(".json").read_text())["arch"] == "espcn"


def test_tampered_file_is_refused(tmp_path):
    _, path = _save_espcn(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_weights(path)


def test_card_that_lies_about_the_architecture(tmp_path):
    _, path = _save_espcn(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card.update(arch="srresnet", sha256="")
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="espcn.*srresnet|srresnet.*espcn"):
        load_weights(path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    net = SRResNet(scale=4, num_blocks=2)
    save_weights(
        net,
        tmp_path / "small",
        ModelCard(name="x", arch="srresnet", scale=4, arch_params={"scale": 4, "num_blocks": 2}),
    )
    card = json.loads((tmp_path / "small.json").read_text())
    card["arch_params"]["num_feat"] = 32
    (tmp_path / "small.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match=r"shape mismatch .*\(64,\) != \(32,\)"):
        load_weights(tmp_path / "small.safetensors")


def test_missing_tensors_are_named(tmp_path):
    net = ESPCN(scale=4)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("conv3")}
    save_file(state, str(tmp_path / "partial.safetensors"))
    (tmp_path / "partial.json").write_text(
        json.dumps({"name": "espcn", "arch": "espcn", "scale": 4, "arch_params": {"scale": 4}})
    )
    with pytest.raises(WeightsError, match="missing conv3.bias, conv3.weight"):
        load_weights(tmp_path / "partial.safetensors")


def test_wrapper_prefixes_are_stripped(tmp_path):
    net = ESPCN(scale=4)
    state = {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}
    save_file(state, str(tmp_path / "wrapped.safetensors"))
    (tmp_path / "wrapped.json").write_text(
        json.dumps({"name": "espcn", "arch": "espcn", "scale": 4, "arch_params": {"scale": 4}})
    )
    loaded, _ = load_weights(tmp_path / "wrapped.safetensors")
    assert torch.equal(loaded.conv1.weight, net.conv1.weight)


def test_a_pickle_is_never_loaded(tmp_path):
    path = tmp_path / "evil.safetensors"
    torch.save({"conv1.weight": torch.zeros(1)}, path)  # a pickle with the right name
    (tmp_path / "evil.json").write_text(json.dumps({"name": "espcn", "arch": "espcn", "scale": 4}))
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(path)


def test_missing_or_broken_card(tmp_path):
    with pytest.raises(WeightsError, match="missing"):
        load_card(tmp_path / "nothing.safetensors")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_card(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(WeightsError, match="arch, scale"):
        load_card(tmp_path / "partial.json")


def test_unknown_architecture(tmp_path):
    save_file(ESPCN(scale=4).state_dict(), str(tmp_path / "x.safetensors"))  # no metadata to cross-check
    (tmp_path / "x.json").write_text(json.dumps({"name": "x", "arch": "transformer", "scale": 4}))
    with pytest.raises(WeightsError, match="unknown architecture 'transformer'; known: discriminator, espcn"):
        load_weights(tmp_path / "x.safetensors")
