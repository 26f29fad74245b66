"""A zip bomb shaped like a dataset upload: an .npz whose `images` member is hundreds of MB of zeros
that deflate to a few hundred kB (built in chunks: the test process never holds it unpacked)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

CHUNK = 1 << 20


def npz_bomb(n: int = 6000, side: int = 256) -> bytes:
    """`images` uint8 (n, side, side) of zeros, deflated; 6000 x 256 x 256 = 393 MB unpacked."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("images.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, side, side)})
            left = n * side * side
            zeros = bytes(CHUNK)
            while left:
                f.write(zeros[: min(CHUNK, left)])
                left -= min(CHUNK, left)
        with z.open("labels.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros(n, np.int64))
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert m, status
    return int(m.group(1)) / 1024
