"""The model card schema (``model.card``): every shipped card passes; each malformed card is refused with the
field named, before anything is built from it; the per-architecture parameters track the constructors."""

from __future__ import annotations

import inspect
import json
import time

import pytest

from model.archs import ARCHS
from model.card import ARCH_PARAMS, MAX_DEPTH, CardError, parse_card, validate_card
from model.weights import ModelCard, WeightsError
from model.zoo import SHIPPED_WEIGHTS_DIR

SHIPPED = sorted(SHIPPED_WEIGHTS_DIR.glob("*.json"))


def card(**changes) -> dict:
    """The shipped SRResNet card with ``changes`` (dotted keys reach into nested objects)."""
    d = json.loads((SHIPPED_WEIGHTS_DIR / "srresnet_x4.json").read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = d
        for p in parents:
            target = target[p]
        target[last] = value
    return d


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_card_is_valid(path):
    data = parse_card(path.read_bytes())
    assert validate_card(data).arch == data["arch"]


BAD_CARDS = [  # (the field the error must name, the card)
    ("scale", card(scale=float("inf"))),  # what json.loads makes of 1e400
    ("scale", card(scale="4")),
    ("scale", card(scale=True)),
    ("scale", card(scale=0)),
    ("arch_params.num_feat", card(**{"arch_params.num_feat": -1})),
    ("arch_params.num_blocks", card(**{"arch_params.num_blocks": 10_000})),
    ("arch_params.num_channels", card(**{"arch_params.num_channels": 1})),
    ("arch_params.scale", card(**{"arch_params.scale": 2})),
    ("arch_params.bogus", card(**{"arch_params.bogus": 3})),
    ("arch", card(arch="vdsr")),
    ("arch", card(arch="discriminator")),
    ("name", card(name="")),
    ("name", card(name="../../etc")),
    ("input_range", card(input_range=[1.0, 0.0])),
    ("input_range[1]", card(input_range=[0.0, float("nan")])),
    ("metrics.Set5.psnr_y", card(**{"metrics.Set5.psnr_y": float("-inf")})),
    ("recipe.lr", card(**{"recipe.lr": 10**30})),
    ("notes", card(notes="x" * 30_000)),
    ("sha256", card(sha256="not-a-digest")),
    ("format", card(format="someone-else/card/9")),
    ("color", card(color="YCbCr")),
    ("arch, scale", {"name": "x"}),
]


@pytest.mark.parametrize("field,bad", BAD_CARDS, ids=[f"{i}-{f}" for i, (f, _) in enumerate(BAD_CARDS)])
def test_each_malformed_card_names_its_field(field, bad):
    with pytest.raises(CardError) as e:
        validate_card(bad)
    assert e.value.field == field, str(e.value)
    assert str(e.value).startswith(f"{field}: ")


def test_kernel_sizes_are_odd_and_srcnn_sized():
    srcnn = {"name": "srcnn", "arch": "srcnn", "scale": 4, "arch_params": {"scale": 4, "f1": 8}}
    with pytest.raises(CardError, match=r"arch_params\.f1: .*odd"):
        validate_card(srcnn)


def test_a_network_too_large_to_build_is_refused_without_building_it():
    huge = {"name": "srcnn", "arch": "srcnn", "scale": 4, "arch_params": {"scale": 4, "n1": 1024, "n2": 1024}}
    huge["arch_params"]["f2"] = 15
    t0 = time.perf_counter()
    with pytest.raises(CardError, match=r"arch_params: the network would have 236,257,283 parameters"):
        validate_card(huge)
    assert time.perf_counter() - t0 < 30  # counted on the meta device: 0.9 GB of weights never allocated


@pytest.mark.parametrize("depth", [200_000, MAX_DEPTH + 1])
def test_deep_nesting_is_refused_before_the_json_parser(depth):
    body = '{"a": ' * depth + "1" + "}" * depth
    raw = b'{"name": "x", "arch": "espcn", "scale": 4, "recipe": ' + body.encode() + b"}"
    if len(raw) > 1_000_000:
        with pytest.raises(CardError, match="larger than 1,000,000 bytes"):
            parse_card(raw)
        raw = b'{"recipe": ' + b"[" * depth + b"]" * depth + b"}"  # the same depth within the size limit
    with pytest.raises(CardError, match=f"nested deeper than {MAX_DEPTH} levels") as e:
        parse_card(raw)
    assert e.value.field.startswith(("recipe.a.a.a", "recipe[][][]")), e.value.field


def test_overflowing_and_unparseable_numbers():
    with pytest.raises(CardError, match=r"^scale: inf is not a finite number"):
        parse_card(b'{"name": "x", "arch": "espcn", "scale": 1e400}')
    with pytest.raises(CardError, match="not valid JSON"):
        parse_card(b'{"name": "x", "arch": "espcn", "scale": ' + b"9" * 5000 + b"}")
    with pytest.raises(CardError, match="not UTF-8"):
        parse_card(b'{"name": "\xff"}')


def test_unknown_fields_are_kept_but_bounded():
    assert validate_card(card(provenance={"by": "alice"}))
    with pytest.raises(CardError, match=r"^provenance\.blob: a string of 200,001 characters"):
        validate_card(card(provenance={"blob": "x" * 200_001}))


def test_model_card_from_dict_validates():
    with pytest.raises(WeightsError, match=r"invalid model card: arch_params\.num_feat"):
        ModelCard.from_dict(card(**{"arch_params.num_feat": 0}))
    assert ModelCard.from_dict(card()).arch_params["num_feat"] == 64


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_parameter_schemas_match_the_constructors(arch):
    """Each schema lists exactly the constructor's arguments with its defaults, so the two cannot drift."""
    sig = inspect.signature(ARCHS[arch].__init__)
    ctor = {n: p.default for n, p in sig.parameters.items() if n != "self"}
    schema = {n: f.default for n, f in ARCH_PARAMS[arch].model_fields.items()}
    assert schema == ctor
