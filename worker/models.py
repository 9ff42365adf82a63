"""The models a worker holds in memory, and hot swap.

:class:`ModelPool` loads models through the registry (``worker/registry.py``): the active version, or the version
a job pins (``name@version``; a few are kept loaded, least recently used dropped). A watcher thread hears
promotions on the registry's pub/sub channel (and re-reads the active versions every ``worker_model_poll_s`` in
case a message was missed), loads the new version beside the old one while batches keep running, and stages it;
the batch loop calls :meth:`ModelPool.switch_staged` between two batches, so the engine of a batch is chosen when
it starts and never changes under it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import redis

from worker import metrics as M
from worker.records import ServedModel

__all__ = ["ModelPool", "ModelError", "engine_config"]

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (model, scale)


class ModelError(Exception):
    """A model cannot be served; ``code`` is the job error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def engine_config(settings):
    """The engine settings of a worker (``SRGAN_WORKER_*``); ``srgan bench service`` times the engine alone with
    the same ones."""
    from model.engine import EngineConfig

    s = settings
    return EngineConfig(
        device=s.worker_device,
        precision=s.worker_precision,
        tile=s.worker_tile,
        batch_size=s.worker_batch_size,
        streams=s.worker_streams,
        compile=s.worker_compile != "off",
        compile_mode=s.worker_compile if s.worker_compile != "off" else "default",
        cuda_graphs=s.worker_cuda_graphs,
    )


class ModelPool:
    """The engines of one worker: the active version of each model served, recently used other versions, and
    newly promoted versions loaded but not switched to yet."""

    def __init__(self, settings, registry, connection, *, name: str = "worker"):
        self.settings = settings
        self.registry = registry
        self.conn = connection
        self.name = name
        self.engines: dict[Key, Any] = {}  # the active version of each model served
        self._versions: OrderedDict[tuple[str, int, int], Any] = OrderedDict()  # other loaded versions (LRU)
        # realism blends: (scale, realism, srresnet sha256, srgan sha256) -> engine, least recently used first
        self._blends: OrderedDict[tuple[int, float, str, str], Any] = OrderedDict()
        self._staged: dict[Key, tuple[Any, str]] = {}  # newly active versions loaded, not switched to yet
        self._failed: dict[tuple[str, int, int], float] = {}  # version -> when loading it last failed
        self.lock = threading.RLock()  # held by a batch: engines change only between batches
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.changed = threading.Event()  # set when the served set changes (the heartbeat re-advertises)

    # -- what a batch asks for ----------------------------------------------------------------------------
    def preload(self, specs: list[str]) -> None:
        from model.specs import parse_series

        for spec in specs:
            name, scale = parse_series(spec, self.settings.default_scale)
            self.engine(name, int(scale or self.settings.default_scale))

    def serves(self, name: str, scale: int) -> bool:
        return (name, scale) in self.engines

    def engine(self, name: str, scale: int, pin: int | str | None = None, *, realism: float | None = None):
        """The engine of the active version of ``name`` x``scale`` (loaded on first use), or of version ``pin``;
        with ``realism``, of that blend of the active srresnet and srgan (:meth:`blended`)."""
        if realism is not None:
            return self.blended(name, scale, realism)
        with self.lock:
            active = self.engines.get((name, scale))
            if pin is None or (active is not None and pin in (active.model.version_number, active.model.version)):
                if active is None:
                    active = self._load(name, scale)
                    self._install(name, scale, active)
                return active
            if isinstance(pin, int) and (name, scale, pin) in self._versions:
                self._versions.move_to_end((name, scale, pin))
                return self._versions[(name, scale, pin)]
            up = self._load(name, scale, pin)
            key = (name, scale, up.model.version_number)
            if active is not None and key[2] == active.model.version_number:
                return active  # a sha256 prefix of the active version
            up = self._versions.get(key) or up
            self._keep(key, up)
            return up

    def blended(self, name: str, scale: int, realism: float):
        """The engine of ``realism`` between the active srresnet (0) and srgan (1) x``scale``
        (``model.blend``), built once per value and pair of versions and kept for the next batches (the
        ``worker_version_cache`` most recently used); a promotion of either model makes new blends."""
        from model.blend import REALISM_MODELS, blend_models, check_realism
        from model.engine import Upscaler
        from model.weights import WeightsError

        psnr_name, adv_name = REALISM_MODELS
        if name != adv_name:
            raise ModelError(
                "model_unavailable", f"realism blends {psnr_name} and {adv_name}: it needs model {adv_name}"
            )
        try:
            value = check_realism(realism)
        except ValueError as e:
            raise ModelError("invalid_realism", str(e)) from None
        with self.lock:
            psnr, adv = self.engine(psnr_name, scale), self.engine(adv_name, scale)
            key = (scale, value, psnr.model.version, adv.model.version)
            up = self._blends.get(key)
            if up is not None:
                self._blends.move_to_end(key)
                return up
            t0 = time.perf_counter()
            try:
                up = Upscaler(blend_models(psnr.model, adv.model, value), engine_config(self.settings))
            except WeightsError as e:
                raise ModelError("model_unavailable", str(e)) from None
            self._blends[key] = up
            while len(self._blends) > max(1, self.settings.worker_version_cache):
                self._blends.popitem(last=False)
            log.info("blended realism %.2f of %s and %s x%d in %.0f ms", value, psnr_name, adv_name, scale,
                     (time.perf_counter() - t0) * 1000)  # fmt: skip
            return up

    def served(self) -> list[ServedModel]:
        return [
            ServedModel(
                name=n,
                scale=s,
                version=up.model.version_number,
                sha256=up.model.version,
                device=str(up.device),
                precision=up.precision,
            )
            for (n, s), up in list(self.engines.items())
        ]

    def device(self):
        """The compute device (every engine of a worker is on its one device), or None before any load."""
        up = next(iter(list(self.engines.values())), None)
        return None if up is None else up.device

    # -- loading ------------------------------------------------------------------------------------------
    def _load(self, name: str, scale: int, pin: int | str | None = None):
        """Load a version (default: the active one) into a new engine, beside whatever is loaded."""
        from model.engine import Upscaler
        from model.registry import RegistryError
        from model.specs import NoWeightsError, UnknownModelError, load_weightless
        from model.weights import WeightsError

        t0 = time.perf_counter()
        try:
            if self.registry.spec(name, scale).weightless:
                if pin not in (None, ""):
                    raise UnknownModelError(f"model {name!r} is an interpolation without weights: it has no versions")
                loaded = load_weightless(name, scale)
            else:
                loaded = self.registry.load(name, scale, pin)
        except (UnknownModelError, NoWeightsError, WeightsError) as e:
            raise ModelError("model_unavailable", str(e)) from None
        except RegistryError as e:
            raise ModelError("model_version_unavailable", str(e)) from None
        up = Upscaler(loaded, engine_config(self.settings))
        dt = time.perf_counter() - t0
        M.MODEL_LOAD_SECONDS.labels(name).observe(dt)
        d = up.describe()
        log.info(
            "loaded %s x%d version %s (%s) on %s, %s, tile %s in %.0f ms",
            name,
            scale,
            d["version_number"] or "builtin",
            d["version"][:12],
            d["device"],
            d["precision"],
            d["tile"],
            dt * 1000,
        )
        return up

    def _keep(self, key: tuple[str, int, int], up) -> None:
        """Keep a non-active version loaded (most recently used last); forget the oldest beyond the cache size."""
        if key[2] is None:
            return
        self._versions[key] = up
        self._versions.move_to_end(key)
        while len(self._versions) > self.settings.worker_version_cache:
            self._versions.popitem(last=False)

    def _install(self, name: str, scale: int, up) -> Any:
        """Make ``up`` the active engine of ``name`` x``scale`` (between batches); returns the one it replaces."""
        with self.lock:
            old = self.engines.get((name, scale))
            self.engines[(name, scale)] = up
            self._versions.pop((name, scale, up.model.version_number), None)
            if old is not None and old is not up:
                self._keep((name, scale, old.model.version_number), old)
                M.set_loaded_model(old, False)
        M.set_loaded_model(up, True)
        self.changed.set()
        return old

    # -- hot swap -----------------------------------------------------------------------------------------
    def start_watching(self) -> None:
        self._thread = threading.Thread(target=self._watch_loop, name="srgan-model-watcher", daemon=True)
        self._thread.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch_loop(self) -> None:
        """Hear promotions on the registry channel; re-read the active versions at least every poll interval."""
        poll = self.settings.worker_model_poll_s
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.conn.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.registry.pointer.channel)
                self.sync_versions()  # what changed while we were not listening
                next_poll = time.monotonic() + poll
                while not self._stop.is_set():
                    # short waits, so that a shutdown is not held up by a long poll interval
                    msg = pubsub.get_message(timeout=min(poll, 0.5))
                    if msg is None and time.monotonic() < next_poll:
                        continue
                    while msg is not None and pubsub.get_message(timeout=0) is not None:
                        pass  # several changes at once: one look at the active versions covers them all
                    self.sync_versions()
                    next_poll = time.monotonic() + poll
            except redis.RedisError as e:  # Redis restarting: listen again shortly
                log.warning("worker %s: model watcher lost Redis (%s); retrying", self.name, e)
                self._stop.wait(1)
            except Exception:  # a load failed unexpectedly: keep serving what is loaded, look again later
                log.exception("worker %s: model watcher failed; retrying", self.name)
                self._stop.wait(1)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def sync_versions(self) -> None:
        """Load the newly active version of every learned model served, and switch to it between batches."""
        active_map = self.registry.pointer.active_map()
        with self.lock:
            serving = {
                k: (self._staged[k][0] if k in self._staged else up).model.version_number
                for k, up in self.engines.items()
                if up.model.version_number is not None
            }
        for (name, scale), current in serving.items():
            want = self.registry.active_version(name, scale, active_map)
            if want is None or want == current:
                continue
            if time.monotonic() - self._failed.get((name, scale, want), -1e9) < 60:
                continue  # it failed to load a moment ago: keep serving, try again later
            with self.lock:
                up = self._versions.get((name, scale, want))
            outcome = "cached" if up is not None else "loaded"
            if up is None:
                try:
                    up = self._load(name, scale, want)
                except ModelError as e:
                    self._failed[(name, scale, want)] = time.monotonic()
                    M.MODEL_SWAPS.labels(name, "failed").inc()
                    log.error(
                        "worker %s: cannot load %s x%d version %d, still serving version %s: %s",
                        self.name,
                        name,
                        scale,
                        want,
                        current,
                        e,
                    )
                    continue
            self._staged[(name, scale)] = (up, outcome)
            with self.lock:  # idle (or between batches): switch now; else the batch loop switches next batch
                self.switch_staged()

    def switch_staged(self) -> None:
        """Between batches (holding the lock): switch to the versions staged meanwhile."""
        while self._staged:
            (name, scale), (up, outcome) = self._staged.popitem()
            old = self._install(name, scale, up)
            M.MODEL_SWAPS.labels(name, outcome).inc()
            log.info(
                "worker %s: %s x%d now serves version %s (was %s; %s)",
                self.name,
                name,
                scale,
                up.model.version_number,
                old.model.version_number if old is not None else None,
                outcome,
            )
