"""What fsync on commit costs a per-image stage: one part written through ItemStore.write with
and without ``durable_parts``, and the merge (always durable) with and without fsync.

Part sizes as the stages write them: proposals (2,000 boxes, float32: 32 kB) and conv5 maps
(one VOC image at 5 scales, float16, lzf: about 4 MB). The two settings alternate item by item
so that load on a shared machine hits both alike.

    python benchmarks/fsync_cost.py [--folder DIR] [--items 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from sppdet.io import atomic
from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record

SIZES = {"proposals (32 kB)": {"boxes": (2000, 4)},
         "conv5 maps (4 MB)": {"s480": (256, 30, 40), "s576": (256, 36, 48),
                               "s688": (256, 43, 57), "s864": (256, 54, 72),
                               "s1200": (256, 75, 100)}}


def _arrays(shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> dict:
    dtype = np.float32 if "boxes" in shapes else np.float16
    return {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="where to write (a disk)")
    parser.add_argument("--items", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        root = Path(tmp)
        print(f"folder {root}, {args.items} items per setting")
        print("| part | setting | ms per part (median) | ms per part (mean) |")
        print("|---|---|---:|---:|")
        for label, shapes in SIZES.items():
            arrays = _arrays(shapes, rng)
            options = {"compression": "lzf"} if "boxes" not in shapes else None
            times: dict[bool, list[float]] = {False: [], True: []}
            stores = {d: ItemStore(root / f"{label[:4]}-{d}.h5", Record("bench", {"d": d}),
                                   durable_parts=d) for d in (False, True)}
            for k in range(args.items):
                for durable in (k % 2 == 0, k % 2 == 1):  # alternate which goes first
                    start = time.perf_counter()
                    stores[durable].write(f"img{k:05d}", arrays, compression=options)
                    times[durable].append(time.perf_counter() - start)
            for durable in (False, True):
                values = [1000 * t for t in times[durable]]
                print(f"| {label} | {'fsync' if durable else 'no fsync'} | "
                      f"{statistics.median(values):.2f} | {statistics.fmean(values):.2f} |")
            # the merge: durable always; compare with fsync switched off
            ids = [f"img{k:05d}" for k in range(args.items)]
            for store in stores.values():
                store.close()
            for durable in (True, False):
                store = ItemStore(root / f"{label[:4]}-{not durable}.h5",
                                  Record("bench", {"d": not durable}))
                patch = mock.patch.object(atomic, "_fsync_file", lambda p: None) if not durable \
                    else mock.patch.object(atomic, "_fsync_file", atomic._fsync_file)
                with patch:
                    start = time.perf_counter()
                    store.finalize(ids)
                    seconds = time.perf_counter() - start
                store.close()
                print(f"| {label} | merge of {args.items}, {'fsync' if durable else 'no fsync'}"
                      f" | {1000 * seconds:.1f} (total) | |")


if __name__ == "__main__":
    main()
