"""Versions of every learned model, the active version of each, and the quality gate a new version must pass.

A *series* is one model name at one scale (``espcn_x4``). Its versions are numbered 1, 2, 3, ...: version 1 is
the weights found in the weights folders (``$SRGAN_WEIGHTS_DIR``, then the shipped ``model/weights``), used
in place and never copied; uploaded and trained versions start at 2. This module is the only code that knows
the layout of the models directory (``$SRGAN_MODELS_DIR``, default ``$XDG_DATA_HOME/srgan/models``)::

    espcn_x4/                      one folder per series
      v2/espcn_x4.safetensors      the weights of version 2 ...
      v2/espcn_x4.json             ... their model card, as uploaded or exported (sha256 filled in)
      v2/version.json              the registration: source, created, by whom, gate score, training run
      ACTIVE.json                  durable copy of the series' activation stack (see below)
      events.jsonl                 audit log: registered, promoted, rolled back; by whom and when
    .incoming-*/                   uploads being checked; renamed into place once accepted

Which version serves is an *activation stack* per series: promoting pushes a version, rolling back pops the
top, the top is active; an empty stack means version 1 (when it exists). Where the stack lives is an
:class:`ActivePointer`: :class:`FilePointer` (:mod:`model.pointers`) keeps it in ``ACTIVE.json`` (what ``srgan upscale`` reads); the
service keeps it in Redis (``worker/registry.py``), mirrored into the same files, so the command line and the
workers agree and a Redis restart loses nothing.

A new version is accepted only if its card and weights agree (``model.weights.load_weights``), its
architecture is the model's, a forward pass on a small input gives finite pixels of the right size, and its
PSNR-Y on the gate set (``model/gate``, or any folder of HR images) is no worse than the active version's
(or bicubic's, when none is active) minus a tolerance, and its pictures look right on the gate set: no more
dot grid than ``GATE_LATTICE_RATIO`` times HR's own (``model.quality.lattice_score``) and no mean colour shift
beyond ``GATE_COLOUR_LEVELS`` on any channel (``model.quality.colour_error``). A version that fails the
picture checks (a trained one is registered all the same, its gate recorded) cannot be promoted without force.
The scores and the verdict are :mod:`model.qualitygate`'s; the file pointer is :mod:`model.pointers`'s.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.card import read_json
from model.clock import iso_now
from model.pointers import STACK_LIMIT, ActivePointer, FilePointer
from model.qualitygate import GATE_COLOUR_LEVELS, GATE_DIR, GATE_LATTICE_RATIO, GateError, QualityGate, gate_text
from model.specs import (
    SPECS,
    ModelSpec,
    NoWeightsError,
    UnknownModelError,
    find_weights,
    load_file,
    load_weightless,
    series_id,
    spec_of,
)
from model.weights import ModelCard, WeightsError, load_card, sha256_file

__all__ = [
    "Registry",
    "RegistryError",
    "VersionRecord",
    "ActivePointer",
    "FilePointer",
    "Change",
    "match_pin",
    "models_dir",
    "default_registry",
    "series_id",
    "GATE_DIR",
    "SHIPPED_VERSION",
    "SOURCES",
    "GATE_LATTICE_RATIO",
    "GATE_COLOUR_LEVELS",
    "gate_text",
]

log = logging.getLogger(__name__)

SHIPPED_VERSION = 1
SOURCES = ("shipped", "uploaded", "trained")
_SMOKE_SIDE = 24  # LR side of the smoke-test input


class RegistryError(ValueError):
    """A refused registry operation. ``code`` is stable (the API's error code); the message is for people."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def models_dir() -> Path:
    """``$SRGAN_MODELS_DIR``, else ``$XDG_DATA_HOME/srgan/models`` (``~/.local/share/srgan/models``)."""
    env = os.environ.get("SRGAN_MODELS_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(data_home) / "srgan" / "models"


# -- where the active version is kept ----------------------------------------------------------------------


@dataclass
class VersionRecord:
    """One version of a series: what it is, where it came from, how it scored, who promoted it."""

    name: str
    scale: int
    version: int
    arch: str
    sha256: str
    source: str  # shipped | uploaded | trained
    created: str
    path: Path
    card: ModelCard
    registered_by: str | None = None
    registered_at: str | None = None
    run: str | None = None  # training run id (source "trained")
    gate: dict[str, Any] | None = None
    notes: str = ""
    promoted_by: str | None = None
    promoted_at: str | None = None

    @property
    def series(self) -> str:
        return series_id(self.name, self.scale)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scale": self.scale,
            "version": self.version,
            "arch": self.arch,
            "sha256": self.sha256,
            "source": self.source,
            "created": self.created,
            "registered_by": self.registered_by,
            "registered_at": self.registered_at,
            "run": self.run,
            "promoted_by": self.promoted_by,
            "promoted_at": self.promoted_at,
            "notes": self.notes,
            "metrics": {
                **{k: v for k, v in self.card.metrics.items() if k != "eval"},
                **({"gate": self.gate} if self.gate else {}),
            },
            "num_params": self.card.num_params,
            "path": str(self.path),
        }


@dataclass
class Change:
    """What a promotion or rollback did."""

    record: VersionRecord
    previous: int | None
    changed: bool
    stack: list[int] = field(default_factory=list)


# -- the registry ------------------------------------------------------------------------------------------


class Registry:
    """The versions of every series in ``root`` and their activation (see the module docstring).

    Args:
        root: the models directory (default: :func:`models_dir`).
        pointer: where activation stacks live (default: :class:`FilePointer` on ``root``).
        weights_dirs: where version 1 is looked for (default: ``model.specs.weights_dirs()``).
        gate_dir: HR images of the quality gate (default: the shipped ``model/gate``).
        gate_tolerance_db: how much lower than the active version's PSNR-Y a new version may score.
        gate_lattice_ratio: the most dot grid a new version may paint, as a multiple of HR's on the gate set.
        gate_colour_levels: the largest mean colour error (SR - HR, levels 0..255) allowed on any channel.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        pointer: ActivePointer | None = None,
        weights_dirs: list[Path] | None = None,
        gate_dir: str | Path | None = None,
        gate_tolerance_db: float = 0.1,
        gate_lattice_ratio: float = GATE_LATTICE_RATIO,
        gate_colour_levels: float = GATE_COLOUR_LEVELS,
    ):
        self.root = Path(root) if root is not None else models_dir()
        self.files = FilePointer(self.root)
        self.pointer: ActivePointer = pointer if pointer is not None else self.files
        self.weights_dirs = weights_dirs
        self.gate = QualityGate(
            gate_dir, tolerance_db=gate_tolerance_db, lattice_ratio=gate_lattice_ratio, colour_levels=gate_colour_levels
        )
        self.gate_dir = self.gate.gate_dir

    # -- reading -------------------------------------------------------------------------------------------
    @staticmethod
    def spec(name: str, scale: int) -> ModelSpec:
        return spec_of(name, scale)

    def _learned(self, name: str, scale: int):
        spec = self.spec(name, scale)
        if spec.weightless:
            raise RegistryError("weightless_model", f"{name} is an interpolation without weights: it has no versions")
        return spec

    def _shipped(self, name: str, scale: int) -> VersionRecord | None:
        path = find_weights(name, scale, self.weights_dirs)
        if path is None:
            return None
        try:
            card = load_card(path)
        except WeightsError as e:
            log.warning("version 1 of %s is unusable: %s", series_id(name, scale), e)
            return None
        return VersionRecord(name, scale, SHIPPED_VERSION, card.arch, card.sha256, "shipped", card.created, path, card)

    def _registered(self, name: str, scale: int, version: int, vdir: Path) -> VersionRecord | None:
        try:
            reg = json.loads((vdir / "version.json").read_text())
            path = vdir / f"{series_id(name, scale)}.safetensors"
            card = load_card(path)
        except (OSError, ValueError, WeightsError) as e:
            log.warning("skipping %s: %s", vdir, e)
            return None
        return VersionRecord(
            name,
            scale,
            version,
            card.arch,
            card.sha256,
            reg.get("source", "uploaded"),
            card.created or reg.get("registered_at", ""),
            path,
            card,
            registered_by=reg.get("registered_by"),
            registered_at=reg.get("registered_at"),
            run=reg.get("run"),
            gate=reg.get("gate"),
            notes=reg.get("notes", ""),
        )

    def _version_dirs(self, name: str, scale: int) -> dict[int, Path]:
        d = self.root / series_id(name, scale)
        out = {}
        if d.is_dir():
            for v in d.iterdir():
                if v.name.startswith("v") and v.name[1:].isdigit() and (v / "version.json").exists():
                    out[int(v.name[1:])] = v
        return out

    def versions(self, name: str, scale: int) -> list[VersionRecord]:
        """Every version of the series, oldest first, with who promoted each last and when."""
        self._learned(name, scale)
        records = []
        shipped = self._shipped(name, scale)
        if shipped is not None:
            records.append(shipped)
        for n, vdir in sorted(self._version_dirs(name, scale).items()):
            rec = self._registered(name, scale, n, vdir)
            if rec is not None:
                records.append(rec)
        promoted = {}
        for ev in self.events(name, scale):
            if ev.get("action") in ("promote", "rollback") and ev.get("version") is not None:
                promoted[int(ev["version"])] = ev
        for rec in records:
            last = promoted.get(rec.version)
            if last is not None:
                rec.promoted_by, rec.promoted_at = last.get("by"), last.get("at")
        return records

    def version(self, name: str, scale: int, version: int) -> VersionRecord:
        self._learned(name, scale)
        version = int(version)
        if version == SHIPPED_VERSION:
            rec = self._shipped(name, scale)
        else:
            vdir = self._version_dirs(name, scale).get(version)
            rec = self._registered(name, scale, version, vdir) if vdir is not None else None
        if rec is None:
            have = ", ".join(str(r.version) for r in self.versions(name, scale)) or "none"
            raise RegistryError(
                "unknown_version", f"{series_id(name, scale)} has no version {version} (versions: {have})"
            )
        return rec

    def find(self, name: str, scale: int, pin: int | str) -> VersionRecord:
        """A version by number, or by a prefix of its sha256 (at least 6 hex digits, unambiguous)."""
        records = {r.version: r for r in self.versions(name, scale)}
        version = match_pin({v: r.sha256 for v, r in records.items()}, pin)
        if version is None:
            raise RegistryError(
                "unknown_version",
                f"{series_id(name, scale)} has no version {pin!r} (versions: "
                f"{', '.join(map(str, records)) or 'none'}; give a version number, or at least 6 "
                "hex digits of its sha256)",
            )
        return records[version]

    def default_version(self, name: str, scale: int) -> int | None:
        return SHIPPED_VERSION if self._shipped(name, scale) is not None else None

    def history(self, name: str, scale: int) -> list[int]:
        """The activation stack, oldest first, as the service sees it (version 1 at the bottom when it was the
        default before the first promotion)."""
        stack = self.pointer.stack(series_id(name, scale))
        return stack or ([d] if (d := self.default_version(name, scale)) is not None else [])

    def active_version(self, name: str, scale: int, active_map: dict[str, int] | None = None) -> int | None:
        """The version that serves ``name`` x``scale`` (None: nothing to serve)."""
        sid = series_id(name, scale)
        if active_map is not None:
            v = active_map.get(sid)
        else:
            stack = self.pointer.stack(sid)
            v = stack[-1] if stack else None
        return v if v is not None else self.default_version(name, scale)

    def active(self, name: str, scale: int) -> VersionRecord | None:
        v = self.active_version(name, scale)
        return None if v is None else self.version(name, scale, v)

    def resolve(self, name: str, scale: int, pin: int | str | None = None) -> VersionRecord:
        """The version to run: ``pin`` if given, else the active one. Raises NoWeightsError when neither."""
        if pin is not None and str(pin) != "":
            return self.find(name, scale, pin)
        rec = self.active(name, scale)
        if rec is None:
            raise NoWeightsError(
                f"model {name!r} x{scale} has no weights: nothing in "
                f"{self.root / series_id(name, scale)} is active and no {series_id(name, scale)}"
                ".safetensors is in the weights folders"
            )
        return rec

    def load(self, name: str, scale: int, pin: int | str | None = None, record: VersionRecord | None = None):
        """``model.specs.LoadedModel`` of the pinned (else active) version, its ``version_number`` set."""
        rec = record or self.resolve(name, scale, pin)
        loaded = load_file(name, scale, rec.path)
        loaded.version_number = rec.version
        return loaded

    def catalog(self, active_map: dict[str, int] | None = None) -> list[dict[str, Any]]:
        """Every (model, scale) that can be asked for: whether it has weights, its active version, its sha256
        and benchmark scores (the card's), and every version's sha256."""
        rows = []
        active_map = self.pointer.active_map() if active_map is None else active_map
        for spec in SPECS.values():
            for scale in spec.scales:
                row = {
                    "name": spec.name,
                    "scale": scale,
                    "arch": spec.arch,
                    "description": spec.description,
                    "weightless": spec.weightless,
                    "has_weights": spec.weightless,
                    "version": None,
                    "sha256": "builtin" if spec.weightless else None,
                    "versions": {},
                    "path": None,
                    "metrics": {},
                }
                if not spec.weightless:
                    records = {r.version: r for r in self.versions(spec.name, scale)}
                    active = self.active_version(spec.name, scale, active_map)
                    row["versions"] = {v: r.sha256 for v, r in records.items()}
                    if active in records:
                        row.update(
                            has_weights=True,
                            version=active,
                            sha256=records[active].sha256,
                            path=str(records[active].path),
                            metrics=records[active].to_dict()["metrics"],
                        )
                rows.append(row)
        return rows

    # -- audit log ---------------------------------------------------------------------------------------------
    def events(self, name: str, scale: int) -> list[dict[str, Any]]:
        path = self.root / series_id(name, scale) / "events.jsonl"
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash
        return out

    def _log(self, name: str, scale: int, event: dict[str, Any]) -> None:
        path = self.root / series_id(name, scale) / "events.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # O_APPEND: one short line per write, never interleaved
            f.write(json.dumps(event) + "\n")

    # -- promotion ---------------------------------------------------------------------------------------------
    def promote(self, name: str, scale: int, version: int, *, by: str, force: bool = False) -> Change:
        """Make ``version`` the active one (pushed on the activation stack). Promoting the active version
        changes nothing. A version whose recorded gate failed the picture checks (a dot grid, a colour shift)
        is refused with ``quality_gate_failed`` unless ``force``."""
        rec = self.version(name, scale, version)
        if rec.gate and rec.gate.get("pictures_passed") is False and not force:
            raise RegistryError("quality_gate_failed", gate_text(rec.gate), gate=rec.gate)
        default = self.default_version(name, scale)
        seen: dict[str, Any] = {}

        def change(stack: list[int]) -> list[int]:
            if not stack and default is not None:
                stack = [default]
            seen["previous"] = stack[-1] if stack else None
            if stack and stack[-1] == rec.version:
                return stack
            return (stack + [rec.version])[-STACK_LIMIT:]

        event = {
            "action": "promote",
            "model": name,
            "scale": scale,
            "version": rec.version,
            "by": by,
            "at": iso_now(),
        }
        stack = self.pointer.update(series_id(name, scale), change, event)
        changed = seen["previous"] != rec.version
        if changed:
            self._log(name, scale, {**event, "previous": seen["previous"]})
            rec.promoted_by, rec.promoted_at = by, str(event["at"])
        log.info("%s: version %s promoted by %s (was %s)", series_id(name, scale), rec.version, by, seen["previous"])
        return Change(rec, seen["previous"], changed, stack)

    def rollback(self, name: str, scale: int, *, by: str) -> Change:
        """Go back to the version that was active before the current one."""
        self._learned(name, scale)
        default = self.default_version(name, scale)
        seen: dict[str, Any] = {}

        def change(stack: list[int]) -> list[int]:
            if not stack and default is not None:
                stack = [default]
            if len(stack) < 2:
                raise RegistryError(
                    "nothing_to_roll_back",
                    f"{series_id(name, scale)}: version "
                    f"{stack[-1] if stack else 'none'} is the first one activated; there is no "
                    "earlier version to roll back to",
                )
            seen["previous"] = stack[-1]
            return stack[:-1]

        event = {"action": "rollback", "model": name, "scale": scale, "by": by, "at": iso_now()}
        stack = self.pointer.update(series_id(name, scale), change, event)
        rec = self.version(name, scale, stack[-1])
        self._log(name, scale, {**event, "version": rec.version, "previous": seen["previous"]})
        rec.promoted_by, rec.promoted_at = by, str(event["at"])
        log.info(
            "%s: rolled back by %s from version %s to %s", series_id(name, scale), by, seen["previous"], rec.version
        )
        return Change(rec, seen["previous"], True, stack)

    # -- registration ------------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        weights: str | Path,
        card: str | Path | dict | bytes | None = None,
        *,
        scale: int | None = None,
        source: str = "uploaded",
        by: str = "",
        force: bool = False,
        run: str | None = None,
        notes: str = "",
    ) -> VersionRecord:
        """Check a weights file and its card and add them as the next version of ``name`` at the card's scale.

        Refused (:class:`RegistryError`) with code ``invalid_card`` (not a model card), ``wrong_architecture``
        (not this model's architecture or scale), ``invalid_weights`` (does not load into the card's
        architecture: garbage, sha256 or tensors that disagree with the card), ``smoke_test_failed``,
        ``already_registered`` (the same sha256 is a version already) or ``quality_gate_failed`` (unless
        ``force``; trained versions are registered either way, their gate result recorded).
        """
        if source not in SOURCES[1:]:
            raise ValueError(f"source must be uploaded or trained, not {source!r}")
        weights = Path(weights)
        card_data = self._read_card(card if card is not None else weights.with_suffix(".json"))
        card_obj = self._card(card_data)
        try:
            spec = self.spec(name, int(card_obj.scale))
        except (UnknownModelError, TypeError, ValueError) as e:
            raise RegistryError("wrong_architecture", str(e)) from None
        if spec.weightless:
            raise RegistryError("weightless_model", f"{name} is an interpolation without weights")
        if card_obj.arch != spec.arch:
            raise RegistryError(
                "wrong_architecture", f"the card says architecture {card_obj.arch!r}; {name} is {spec.arch!r}"
            )
        if scale is not None and int(scale) != int(card_obj.scale):
            raise RegistryError(
                "wrong_architecture", f"the card says scale {card_obj.scale}; this upload is for {name} x{scale}"
            )
        scale = int(card_obj.scale)
        sid = series_id(name, scale)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".incoming-{sid}-{secrets.token_hex(6)}"
        staging.mkdir()
        try:
            target = staging / f"{sid}.safetensors"
            shutil.copyfile(weights, target)
            target.chmod(0o644)
            target.with_suffix(".json").write_text(json.dumps(card_data, indent=2) + "\n")
            try:
                loaded = load_file(name, scale, target)  # sha256, arch, every tensor name and shape
            except WeightsError as e:
                raise RegistryError("invalid_weights", str(e)) from None
            sha = sha256_file(target)
            assert loaded.card is not None  # a weights file always comes with its card
            if not loaded.card.sha256:  # a card may leave it out; the registered copy says it
                loaded.card.sha256 = sha
                target.with_suffix(".json").write_text(loaded.card.to_json())
            for rec in self.versions(name, scale):
                if rec.sha256 == sha:
                    raise RegistryError(
                        "already_registered",
                        f"these weights are already version {rec.version} of {sid}",
                        version=rec.version,
                    )
            self._smoke(loaded)
            gate = self.check_gate(loaded)
            if not gate["passed"] and not force and source == "uploaded":
                raise RegistryError("quality_gate_failed", gate_text(gate), gate=gate)
            now = iso_now()
            reg = {
                "version": None,
                "source": source,
                "registered_by": by or None,
                "registered_at": now,
                "run": run,
                "gate": gate,
                "notes": notes,
                "sha256": sha,
            }
            version = self._commit(name, scale, staging, reg)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._log(
            name,
            scale,
            {
                "action": "register",
                "model": name,
                "scale": scale,
                "version": version,
                "sha256": sha,
                "source": source,
                "by": by or None,
                "at": now,
                "run": run,
                "gate_passed": gate["passed"],
            },
        )
        log.info(
            "%s: registered version %d (%s, sha256 %s..., gate %s)",
            sid,
            version,
            source,
            sha[:12],
            "passed" if gate["passed"] else "failed",
        )
        return self.version(name, scale, version)

    def _commit(self, name: str, scale: int, staging: Path, reg: dict[str, Any]) -> int:
        """Move the checked files into the next free ``vN`` folder (a rename: atomic, and a concurrent
        registration that took N makes this one try N+1)."""
        series_dir = self.root / series_id(name, scale)
        series_dir.mkdir(parents=True, exist_ok=True)
        n = max([SHIPPED_VERSION, *self._version_dirs(name, scale)]) + 1
        while True:
            reg["version"] = n
            (staging / "version.json").write_text(json.dumps(reg, indent=2) + "\n")
            try:
                os.rename(staging, series_dir / f"v{n}")
                return n
            except OSError:
                if not (series_dir / f"v{n}").exists():
                    raise
                n += 1

    @staticmethod
    def _read_card(card: str | Path | dict | bytes) -> dict[str, Any]:
        if isinstance(card, dict):
            return card
        try:
            data = read_json(card if isinstance(card, bytes) else Path(card).read_bytes())  # bounded size and depth
        except FileNotFoundError:
            raise RegistryError("invalid_card", f"no model card: {card!s} is missing") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise RegistryError("invalid_card", f"the model card is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise RegistryError("invalid_card", "the model card is not a JSON object")
        return data

    @staticmethod
    def _card(data: dict[str, Any]) -> ModelCard:
        try:
            card = ModelCard.from_dict(data)
            int(card.scale)
            return card
        except (WeightsError, TypeError, ValueError) as e:
            raise RegistryError("invalid_card", f"not a model card: {e}") from None

    @staticmethod
    def _smoke(loaded) -> None:
        """One forward pass of the network on a small real-valued input: the right shape, finite values."""
        import torch

        s = loaded.scale
        x = torch.rand(1, 3, _SMOKE_SIDE, _SMOKE_SIDE, generator=torch.Generator().manual_seed(0))
        try:
            with torch.inference_mode():
                y = loaded.module.float()(x)
        except Exception as e:
            raise RegistryError(
                "smoke_test_failed", f"the network fails on a {_SMOKE_SIDE}x{_SMOKE_SIDE} input: {e}"
            ) from None
        want = (1, 3, _SMOKE_SIDE * s, _SMOKE_SIDE * s)
        if tuple(y.shape) != want:
            raise RegistryError(
                "smoke_test_failed", f"a {_SMOKE_SIDE}x{_SMOKE_SIDE} input gives {tuple(y.shape)}, not {want}"
            )
        if not bool(torch.isfinite(y).all()):
            raise RegistryError("smoke_test_failed", "the network outputs NaN or infinite values")

    # -- the quality gate (model/qualitygate.py) ------------------------------------------------------------
    def score(self, loaded) -> dict[str, Any]:
        """The gate set's scores of a loaded model (cached)."""
        try:
            return self.gate.score(loaded)
        except GateError as e:
            raise RegistryError("no_gate_set", str(e)) from None

    def check_gate(self, loaded) -> dict[str, Any]:
        """Score ``loaded`` and judge it against the active version of its series (bicubic when none)."""
        cand = self.score(loaded)
        active = self.active(loaded.name, loaded.scale) if not self.spec(loaded.name, loaded.scale).weightless else None
        if active is not None and active.sha256 == loaded.version:
            base_model, base_name = loaded, f"version {active.version}"
        elif active is not None:
            base_model, base_name = self.load(loaded.name, loaded.scale, record=active), f"version {active.version}"
        else:
            base_model, base_name = load_weightless("bicubic", loaded.scale), "bicubic"
        return self.gate.verdict(cand, self.score(base_model), base_name)


def match_pin(versions: dict[int, str], pin: int | str) -> int | None:
    """The version that ``pin`` names among ``versions`` (number -> sha256): its number, or a prefix of at
    least 6 hex digits of exactly one version's sha256. None when it names none (or several)."""
    text = str(pin).strip().lower()
    if text.isdigit() and int(text) in versions:
        return int(text)
    if len(text) >= 6 and all(c in "0123456789abcdef" for c in text):
        hits = [v for v, sha in versions.items() if sha and sha.startswith(text)]
        if len(hits) == 1:
            return hits[0]
    return None


def default_registry() -> Registry:
    """The registry of ``$SRGAN_MODELS_DIR`` with file-kept activations: what ``srgan upscale`` uses."""
    return Registry(models_dir())
