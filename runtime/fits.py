"""Whether a compiled model can be built here, asked before it is: its parameters alone, as its level graph
counts them, against the memory of this machine and of the device it goes to. A model that cannot fit
is refused with a message, where building it would end in an allocation error, or with the process
killed by the operating system before Python could say anything."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch


class ModelTooLarge(MemoryError):
    """The parameters of a model need more memory than there is; the message gives both sizes."""


def parameter_count(package: Path) -> int:
    """The learnable parameters of the compiled package's model (the sum over its levels)."""
    levels = json.loads((Path(package) / "levels.json").read_text(encoding="utf-8"))["levels"]
    return sum(int(level.get("params") or 0) for level in levels)


def host_memory() -> Optional[int]:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(package: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> None:
    """Raise ModelTooLarge when the parameters alone exceed the host's memory (a model is built on the
    host, in torch's default dtype, before it moves) or the device's."""
    count = parameter_count(package)
    built = count * torch.tensor([], dtype=torch.get_default_dtype()).element_size()
    needs = [(built, host_memory(), "this machine has")]
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        needs.append((count * torch.tensor([], dtype=dtype).element_size(), total, f"{device} has"))
    for size, available, where in needs:
        if available is not None and size > available:
            raise ModelTooLarge(f"the model's {count:,} parameters alone need {size / 1e9:.1f} GB; "
                                f"{where} {available / 1e9:.1f} GB")
