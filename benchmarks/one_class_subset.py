"""A one-class VOC-layout copy of a dataset: only the objects of one class, images symlinked.

BENCHMARKS.md "Recipes" runs the pipeline on BCCD reduced to its white blood cells::

    python benchmarks/one_class_subset.py ../shared/data/bccd /tmp/wbc --keep WBC \\
        --train 80 --val 30 --test 40

Images without an object of the class are left out; the first ``--train``/``--val``/``--test``
remaining ids of the source's train/val/test splits make the new splits (trainval = train +
val). Nothing is written outside ``OUT``.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path


def keep_class(src: Path, dst: Path, image_id: str, name: str) -> bool:
    """Write ``image_id``'s annotation with only the objects named ``name`` and link its image;
    False (nothing written) when it has none."""
    tree = ET.parse(src / "Annotations" / f"{image_id}.xml")
    root = tree.getroot()
    for obj in list(root.findall("object")):
        if (obj.findtext("name") or "").strip() != name:
            root.remove(obj)
    if not root.findall("object"):
        return False
    tree.write(dst / "Annotations" / f"{image_id}.xml")
    link = dst / "JPEGImages" / f"{image_id}.jpg"
    if not link.exists():
        link.symlink_to((src / "JPEGImages" / f"{image_id}.jpg").resolve())
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep", required=True, help="the class whose objects stay")
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--val", type=int, default=30)
    parser.add_argument("--test", type=int, default=40)
    args = parser.parse_args()
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count in (("train", args.train), ("val", args.val), ("test", args.test)):
        ids = (args.source / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        kept = []
        for image_id in ids:
            if len(kept) == count:
                break
            if keep_class(args.source, args.out, image_id, args.keep):
                kept.append(image_id)
        splits[split] = kept
    splits["trainval"] = splits["train"] + splits["val"]
    for split, ids in splits.items():
        (args.out / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    print({split: len(ids) for split, ids in splits.items()})


if __name__ == "__main__":
    main()
