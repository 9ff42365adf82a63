"""The model registry on its own: what it accepts and refuses, activation stacks, pins, the audit log, and the
Redis-kept activations agreeing with the files (and surviving a Redis flush). Real weights, a real gate set and
the real Redis."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest

import tests.registrykit as K
from model.registry import FilePointer, Registry, RegistryError, match_pin
from model.weights import sha256_file
from model.zoo import SHIPPED_WEIGHTS_DIR, list_models, load_model
from tests.servicekit import ClaimedDB, wait_for

pytestmark = pytest.mark.timeout(120)
SHIPPED_SHA = json.loads((SHIPPED_WEIGHTS_DIR / "espcn_x4.json").read_text())["sha256"]


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> Path:
    return K.gate_folder(tmp_path_factory.mktemp("gate"))


@pytest.fixture
def reg(tmp_path, gate) -> Registry:
    return Registry(tmp_path / "models", gate_dir=gate)


def refused(code: str, fn, *args, **kwargs) -> RegistryError:
    with pytest.raises(RegistryError) as e:
        fn(*args, **kwargs)
    assert e.value.code == code, (e.value.code, e.value.message)
    assert e.value.message
    return e.value


def test_register_accepts_a_good_version_and_refuses_bad_ones(reg, tmp_path):
    good = K.variant(tmp_path / "good")
    rec = reg.register("espcn", good, by="alice", notes="first try")
    assert (rec.version, rec.source, rec.registered_by, rec.scale, rec.arch) == (2, "uploaded", "alice", 4, "espcn")
    assert rec.sha256 == sha256_file(good) and rec.sha256 != SHIPPED_SHA
    # the registered copy is complete: weights, a card with its sha256 filled in, the registration
    vdir = reg.root / "espcn_x4" / "v2"
    assert sha256_file(vdir / "espcn_x4.safetensors") == rec.sha256
    assert json.loads((vdir / "espcn_x4.json").read_text())["sha256"] == rec.sha256
    assert json.loads((vdir / "version.json").read_text())["registered_by"] == "alice"
    assert rec.gate["passed"] and rec.gate["baseline"] == "version 1" and rec.gate["images"] == 2
    assert abs(rec.gate["delta_db"]) < 0.1
    assert rec.to_dict()["metrics"]["gate"]["psnr_y"] == rec.gate["psnr_y"]

    def bad(name: str, make) -> Path:
        (tmp_path / name).mkdir()
        return make(tmp_path / name)

    refused("invalid_weights", reg.register, "espcn", bad("garbage", K.garbage))
    e = refused("invalid_weights", reg.register, "espcn", bad("lying", K.lying_card))
    assert "sha256" in e.message
    e = refused("invalid_weights", reg.register, "espcn", bad("swapped", K.srcnn_tensors_espcn_card))
    assert "srcnn" in e.message
    srcnn = K.variant(tmp_path / "srcnn", name="srcnn")
    e = refused("wrong_architecture", reg.register, "espcn", srcnn)  # a good srcnn is not an espcn
    assert "srcnn" in e.message and "espcn" in e.message
    refused("wrong_architecture", reg.register, "espcn", good, scale=2)
    refused("invalid_card", reg.register, "espcn", good, b"{not json")
    refused("invalid_card", reg.register, "espcn", good, {"name": "espcn"})
    refused("weightless_model", reg.register, "bicubic", good)
    e = refused("already_registered", reg.register, "espcn", good)
    assert e.details["version"] == 2
    shipped = tmp_path / "shipped" / "espcn_x4.safetensors"
    shipped.parent.mkdir()
    shipped.write_bytes((SHIPPED_WEIGHTS_DIR / "espcn_x4.safetensors").read_bytes())
    e = refused("already_registered", reg.register, "espcn", shipped, SHIPPED_WEIGHTS_DIR / "espcn_x4.json")
    assert e.details["version"] == 1

    noisy = K.variant(tmp_path / "random", random=True, seed=3)
    e = refused("quality_gate_failed", reg.register, "espcn", noisy)
    assert not e.details["gate"]["passed"] and e.details["gate"]["delta_db"] < -1 and "force" in e.message
    # nothing of the refused uploads is left behind, and the versions are what was accepted
    assert sorted(p.name for p in (reg.root / "espcn_x4").iterdir() if p.name.startswith("v")) == ["v2"]
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".incoming")]
    assert [r.version for r in reg.versions("espcn", 4)] == [1, 2]

    forced = reg.register("espcn", noisy, by="bob", force=True)
    assert forced.version == 3 and forced.gate["passed"] is False
    trained = reg.register("espcn", K.variant(tmp_path / "trained", random=True, seed=4), source="trained", run="run-1")
    assert trained.version == 4 and trained.source == "trained" and trained.run == "run-1"
    assert trained.gate["passed"] is False  # a trained version is kept whatever it scores; the gate is noted
    assert [r.source for r in reg.versions("espcn", 4)] == ["shipped", "uploaded", "uploaded", "trained"]
    events = reg.events("espcn", 4)
    assert [(e["action"], e["version"], e["by"], e["gate_passed"]) for e in events] == [
        ("register", 2, "alice", True),
        ("register", 3, "bob", False),
        ("register", 4, None, False),
    ]


def test_the_gate_compares_with_the_active_version(tmp_path, gate):
    """A slightly-worse version passes within the tolerance and fails without it; the baseline is the active
    version, not version 1."""
    pictures = {"gate_lattice_ratio": 10.0, "gate_colour_levels": 5.0}  # this test is about PSNR only
    strict = Registry(tmp_path / "models", gate_dir=gate, gate_tolerance_db=0.0, **pictures)
    lenient = Registry(tmp_path / "models", gate_dir=gate, gate_tolerance_db=5.0, **pictures)
    worse = K.variant(tmp_path / "worse", noise=3e-3, seed=1)
    gate_strict = strict.check_gate(load_model("espcn", 4, path=worse))
    assert gate_strict["delta_db"] < 0 and not gate_strict["passed"]
    assert lenient.check_gate(load_model("espcn", 4, path=worse))["passed"]
    rec = lenient.register("espcn", worse)
    lenient.promote("espcn", 4, rec.version, by="t")
    # now the baseline is version 2: the same weights score delta 0 and pass even the strict gate
    g = strict.check_gate(load_model("espcn", 4, path=worse))
    assert g["baseline"] == "version 2" and g["delta_db"] == 0 and g["passed"]


def test_the_gate_refuses_a_dot_grid_and_a_colour_shift(tmp_path, gate):
    """Noise on ESPCN's sub-pixel weights paints a grid of the scale's period and shifts the colours while
    PSNR stays within any tolerance: the picture checks refuse the upload, and a trained version (registered
    whatever it scores) cannot be promoted without force."""
    reg = Registry(tmp_path / "models", gate_dir=gate, gate_tolerance_db=5.0)
    gridded = K.variant(tmp_path / "gridded", noise=3e-3, seed=1)
    e = refused("quality_gate_failed", reg.register, "espcn", gridded)
    g = e.details["gate"]
    assert g["psnr_passed"] and not g["pictures_passed"] and g["lattice_ratio"] > g["max_lattice_ratio"]
    assert "dot grid" in e.message and "colours" in e.message and "PSNR" not in e.message
    shipped = reg.check_gate(load_model("espcn", 4))
    assert shipped["passed"] and shipped["lattice_ratio"] < 1.0 and max(map(abs, shipped["colour_error"])) < 0.5
    rec = reg.register("espcn", gridded, source="trained")
    assert rec.gate is not None and rec.gate["pictures_passed"] is False
    refused("quality_gate_failed", reg.promote, "espcn", 4, rec.version, by="t")
    assert reg.active_version("espcn", 4) == 1
    assert reg.promote("espcn", 4, rec.version, by="t", force=True).changed


def test_promote_and_rollback_are_a_stack(reg, tmp_path):
    v2 = reg.register("espcn", K.variant(tmp_path / "a", seed=1)).version
    v3 = reg.register("espcn", K.variant(tmp_path / "b", seed=2)).version
    assert reg.active_version("espcn", 4) == 1 and reg.history("espcn", 4) == [1]
    refused("nothing_to_roll_back", reg.rollback, "espcn", 4, by="x")
    c = reg.promote("espcn", 4, v2, by="alice")
    assert (c.previous, c.record.version, c.changed, c.stack) == (1, 2, True, [1, 2])
    c = reg.promote("espcn", 4, v3, by="bob")
    assert (c.previous, c.stack) == (2, [1, 2, 3]) and reg.active("espcn", 4).version == 3
    c = reg.promote("espcn", 4, v3, by="bob")  # already active: nothing changes, nothing is logged
    assert not c.changed and c.stack == [1, 2, 3]
    c = reg.promote("espcn", 4, 1, by="carol")  # an older version can be promoted again
    assert c.stack == [1, 2, 3, 1] and reg.active_version("espcn", 4) == 1
    c = reg.rollback("espcn", 4, by="dave")
    assert (c.previous, c.record.version, c.stack) == (1, 3, [1, 2, 3])
    assert [reg.rollback("espcn", 4, by="dave").record.version for _ in range(2)] == [2, 1]
    refused("nothing_to_roll_back", reg.rollback, "espcn", 4, by="dave")
    refused("unknown_version", reg.promote, "espcn", 4, 9, by="x")
    refused("weightless_model", reg.promote, "bicubic", 4, 1, by="x")
    assert reg.history("espcn", 4) == [1] and reg.active_version("espcn", 4) == 1
    # the audit log says who did what, and the versions who promoted them last
    acts = [
        (e["action"], e["version"], e.get("previous"), e["by"])
        for e in reg.events("espcn", 4)
        if e["action"] != "register"
    ]
    assert acts == [
        ("promote", 2, 1, "alice"),
        ("promote", 3, 2, "bob"),
        ("promote", 1, 3, "carol"),
        ("rollback", 3, 1, "dave"),
        ("rollback", 2, 3, "dave"),
        ("rollback", 1, 2, "dave"),
    ]
    assert all(e["at"].endswith("Z") for e in reg.events("espcn", 4))
    by = {r.version: r.promoted_by for r in reg.versions("espcn", 4)}
    assert by == {1: "dave", 2: "dave", 3: "dave"}
    # ACTIVE.json is what a fresh registry (srgan upscale) reads
    assert json.loads((reg.root / "espcn_x4" / "ACTIVE.json").read_text())["stack"] == [1]
    # another series is untouched
    assert reg.history("srcnn", 4) == [1] and reg.active_version("srresnet", 4) == 1


def test_pins_by_number_and_sha_prefix(reg, tmp_path):
    a = reg.register("espcn", K.variant(tmp_path / "a", seed=1))
    b = reg.register("espcn", K.variant(tmp_path / "b", seed=2))
    assert reg.find("espcn", 4, 2).sha256 == a.sha256 and reg.find("espcn", 4, "3").sha256 == b.sha256
    assert reg.find("espcn", 4, b.sha256[:6]).version == 3
    assert reg.find("espcn", 4, SHIPPED_SHA[:8].upper()).version == 1
    refused("unknown_version", reg.find, "espcn", 4, 4)
    refused("unknown_version", reg.find, "espcn", 4, b.sha256[:5])  # too short to be a sha256 prefix
    refused("unknown_version", reg.find, "espcn", 4, "zz1234")
    shas = {1: "abcdef01", 2: "abcdef02", 3: "123456ff"}
    assert match_pin(shas, "abcdef") is None  # ambiguous
    assert match_pin(shas, "abcdef0") is None and match_pin(shas, "abcdef02") == 2 and match_pin(shas, 3) == 3
    assert match_pin(shas, "123456") == 3 and match_pin(shas, "7") is None
    # load_model runs the active version unless pinned: what `srgan upscale -m espcn@N` does
    reg.promote("espcn", 4, 3, by="t")
    assert load_model("espcn", 4, registry=reg).version == b.sha256
    pinned = load_model("espcn", 4, version="2", registry=reg)
    assert (pinned.version, pinned.version_number) == (a.sha256, 2)
    assert load_model("espcn", 4, version=SHIPPED_SHA[:10], registry=reg).version_number == 1
    with pytest.raises(RegistryError):
        load_model("espcn", 4, version="7", registry=reg)


def test_srgan_upscale_reads_the_active_version_from_the_models_dir(reg, tmp_path, monkeypatch):
    rec = reg.register("espcn", K.variant(tmp_path / "a", seed=1))
    monkeypatch.setenv("SRGAN_MODELS_DIR", str(reg.root))
    assert load_model("espcn", 4).version == SHIPPED_SHA
    reg.promote("espcn", 4, rec.version, by="t")
    assert load_model("espcn", 4).version == rec.sha256
    rows = {(r["name"], r["scale"]): r for r in list_models()}
    assert rows[("espcn", 4)]["version"] == 2 and rows[("espcn", 4)]["sha256"] == rec.sha256
    assert rows[("espcn", 4)]["versions"] == {1: SHIPPED_SHA, 2: rec.sha256}
    assert rows[("bicubic", 4)]["sha256"] == "builtin" and rows[("bicubic", 4)]["version"] is None


def test_concurrent_registrations_get_distinct_versions(reg, tmp_path):
    paths = [K.variant(tmp_path / f"c{i}", seed=10 + i) for i in range(3)]
    got, errors = [], []

    def go(p):
        try:
            got.append(reg.register("espcn", p).version)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(got) == [2, 3, 4]


# -- Redis-kept activations ------------------------------------------------------------------------------------


@pytest.fixture
def redis_db():
    db = ClaimedDB()
    yield db
    db.release()


def test_redis_and_file_pointers_agree_and_redis_reseeds_from_the_files(redis_db, tmp_path, gate):
    from worker.registry import RedisPointer, channel

    root = tmp_path / "models"
    files = FilePointer(root)
    served = Registry(root, pointer=RedisPointer(redis_db.client, "t-reg", files), gate_dir=gate)
    local = Registry(root, gate_dir=gate)  # srgan upscale's view: the files
    v2 = served.register("espcn", K.variant(tmp_path / "a", seed=1)).version
    v3 = served.register("espcn", K.variant(tmp_path / "b", seed=2)).version
    heard = []
    pubsub = redis_db.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel("t-reg"))

    served.promote("espcn", 4, v2, by="a")
    served.promote("espcn", 4, v3, by="a")
    served.rollback("espcn", 4, by="b")
    for _ in range(3):
        msg = wait_for(lambda: pubsub.get_message(timeout=0.1), 5, "a registry message")
        heard.append(json.loads(msg["data"]))
    pubsub.close()
    assert [(m["series"], m["action"], m["version"], m["by"]) for m in heard] == [
        ("espcn_x4", "promote", 2, "a"),
        ("espcn_x4", "promote", 3, "a"),
        ("espcn_x4", "rollback", 2, "b"),
    ]
    r = redis_db.client
    assert [int(v) for v in r.lrange("t-reg:models:stack:espcn_x4", 0, -1)] == [1, 2]
    assert r.hget("t-reg:models:active", "espcn_x4") == b"2"
    assert files.stack("espcn_x4") == served.pointer.stack("espcn_x4") == [1, 2]
    assert local.active_version("espcn", 4) == served.active_version("espcn", 4) == 2
    assert served.pointer.active_map() == files.active_map() == {"espcn_x4": 2}

    # Redis loses everything (a restart without persistence): the files put it back
    r.delete("t-reg:models:stack:espcn_x4", "t-reg:models:active")
    assert served.active_version("espcn", 4) == 2
    assert [int(v) for v in r.lrange("t-reg:models:stack:espcn_x4", 0, -1)] == [1, 2]
    r.delete("t-reg:models:stack:espcn_x4", "t-reg:models:active")
    assert served.pointer.active_map() == {"espcn_x4": 2}
    assert r.hget("t-reg:models:active", "espcn_x4") == b"2"
    # ... and the stack is whole: rolling back after the flush goes to version 1
    assert served.rollback("espcn", 4, by="c").record.version == 1
    assert files.stack("espcn_x4") == [1] and local.active_version("espcn", 4) == 1


def test_redis_pointer_serialises_concurrent_promotions(redis_db, tmp_path, gate):
    from worker.registry import RedisPointer

    root = tmp_path / "models"
    regs = [
        Registry(root, pointer=RedisPointer(redis_db.client, "t-conc", FilePointer(root)), gate_dir=gate)
        for _ in range(2)
    ]
    for i in range(2):
        regs[0].register("espcn", K.variant(tmp_path / f"v{i}", seed=20 + i))
    errors = []

    def flip(reg, version):
        try:
            for _ in range(10):
                reg.promote("espcn", 4, version, by=f"t{version}")
                reg.promote("espcn", 4, 1, by=f"t{version}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=flip, args=(regs[i], i + 2)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and time.monotonic() - t0 < 30
    stack = regs[0].pointer.stack("espcn_x4")
    changes = [e for e in regs[0].events("espcn", 4) if e["action"] == "promote"]
    # every logged change is one push: the stack holds the default plus one entry per logged promotion
    assert len(stack) == 1 + len(changes) and stack == FilePointer(root).stack("espcn_x4")
    assert all(a != b for a, b in itertools.pairwise(stack))  # never the same version pushed twice in a row
