"""verl platform "cpu": lets verl's trainer run its workers on a machine without an accelerator.

verl 0.9.1 knows only nvidia/huawei/amd and falls back to nvidia (device "cuda", NCCL) when none is found.
This module registers a `PlatformBase` subclass under the name "cpu" with verl's `PlatformRegistry`; it is
*selected* only when `VERL_PLATFORM=cpu` is set, so importing it on a GPU machine changes nothing.

What the platform answers, and why:
- device "cpu", vendor "cpu", backend "gloo": the FSDP2 engine, device meshes and collectives run on gloo.
- `current_device()` returns the string "cpu" (not an index): verl passes it to `.to(...)`, `torch.device(...)`
  and `to_empty(device=...)`, where an int would mean `cuda:<int>`.
- `device_module` is a stand-in for `torch.cuda` whose memory statistics are zeros and whose cache, stream
  and IPC calls are no-ops (`torch.cpu` lacks most of them).
- Ray resource "GPU": verl's resource pools and placement groups ask Ray for one accelerator per worker and
  read `get_accelerator_ids()["GPU"]`; the CPU preset starts Ray with a fake `num_gpus`, so the same
  scheduling code places its workers on CPU cores.

`apply_cpu_runtime_patches()` adds the two adaptations verl needs that a platform cannot express (see there).
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import Any, Optional

import torch

from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def cpu_platform_selected() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


class _NullStream:
    """What verl's activation offload and fused kernels expect of a device stream, doing nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other) -> None:
        pass

    def wait_event(self, event) -> None:
        pass

    def record_event(self, event=None):
        return _NullEvent()

    def synchronize(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _NullEvent:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, stream=None) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _available_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class CPUDeviceModule(types.ModuleType):
    """`get_torch_device()` on CPU: the `torch.cuda`-shaped calls verl makes, answered for host memory.

    Anything not defined here falls through to `torch.cpu`.
    """

    def __init__(self):
        super().__init__("rstar2_agent.verl_cpu.device")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # device selection
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def set_device(device) -> None:
        pass

    @staticmethod
    def get_device_name(device=None) -> str:
        return "cpu"

    @staticmethod
    def synchronize(device=None) -> None:
        pass

    # memory: nothing is cached, statistics are zero, "free/total" is the host's RAM
    @staticmethod
    def empty_cache() -> None:
        pass

    @staticmethod
    def ipc_collect() -> None:
        pass

    @staticmethod
    def memory_allocated(device=None) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    @staticmethod
    def reset_peak_memory_stats(device=None) -> None:
        pass

    @staticmethod
    def set_per_process_memory_fraction(fraction, device=None) -> None:
        pass

    @staticmethod
    def mem_get_info(device=None) -> tuple[int, int]:
        return _available_ram(), _total_ram()

    # RNG: the host generator
    @staticmethod
    def get_rng_state(device=None):
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state, device=None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    # streams and events: CPU work is synchronous
    Stream = _NullStream
    Event = _NullEvent

    @staticmethod
    def current_stream(device=None) -> _NullStream:
        return _NullStream()

    @staticmethod
    def stream(stream=None):
        return contextlib.nullcontext()


_DEVICE_MODULE = CPUDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl on CPU cores only (gloo collectives, host memory); see the module docstring."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        # Never auto-detected: a GPU machine that imports this plugin must keep its own platform.
        return cpu_platform_selected()

    def current_device(self):  # type: ignore[override]
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        pass

    def synchronize(self, device_index: Optional[int] = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the fake "GPU" resource

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


_PATCHED = False


def _dedupe_backend(backend: Optional[str]) -> Optional[str]:
    """"cpu:gloo,cpu:gloo" -> "cpu:gloo": torch refuses a device type named twice."""
    if not backend or "," not in backend:
        return backend
    seen: dict[str, str] = {}
    for part in backend.split(","):
        device, _, name = part.partition(":")
        seen.setdefault(device.strip(), name.strip() if name else "")
    return ",".join(f"{d}:{n}" if n else d for d, n in seen.items())


def apply_cpu_runtime_patches() -> None:
    """The two things verl 0.9.1 needs on CPU that a platform object cannot say (idempotent, only when
    `VERL_PLATFORM=cpu`):

    1. verl builds its process-group backend as `f"cpu:gloo,{device}:{backend}"`
       (verl/utils/distributed.py, `initialize_global_process_group_ray`), which is "cpu:gloo,cpu:gloo" here;
       torch raises `ValueError: Duplicate device type cpu`. We wrap `torch.distributed.init_process_group`
       to drop the duplicate.
    2. verl's `EngineRegistry` registers the FSDP engines for devices "cuda" and "npu" only
       (verl/workers/engine/fsdp/transformer_impl.py:1143). verl itself reads `VERL_ENGINE_DEVICE` /
       `VERL_ENGINE_VENDOR` to override the lookup (verl/workers/engine/base.py:405); we default them to the
       "cuda" registration, whose class is device-agnostic once the platform above answers "cpu".
    """
    global _PATCHED
    if _PATCHED or not cpu_platform_selected():
        return
    _PATCHED = True
    import torch.distributed as dist

    original = dist.init_process_group

    def init_process_group(backend=None, *args, **kwargs):
        return original(_dedupe_backend(backend), *args, **kwargs)

    init_process_group.__wrapped__ = original  # type: ignore[attr-defined]
    dist.init_process_group = init_process_group
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    os.environ.setdefault("VERL_ENGINE_VENDOR", "nvidia")
