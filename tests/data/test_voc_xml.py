"""Tests of the VOC XML writer (sppdet.data.voc_xml)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from sppdet.data.voc_xml import VocXmlObject, voc_xml_string, write_voc_xml
from sppdet.errors import DataError

# ---------------------------------------------------------------------------------------------
# VOC XML writer


def test_write_voc_xml_round_trip(tmp_path):
    objects = [
        VocXmlObject("dog", (48, 240, 195, 371), truncated=True),
        VocXmlObject("person & co", (8.5, 12, 352, 498.25), difficult=True, pose="Left"),
        VocXmlObject("cat", (1, 2, 3, 4), truncated=None, difficult=None, pose=None),
    ]
    path = write_voc_xml(tmp_path / "a.xml", "000001.jpg", 353, 500, objects, folder="VOC2007")
    root = ET.parse(path).getroot()
    assert root.findtext("folder") == "VOC2007"
    assert root.findtext("filename") == "000001.jpg"
    assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == ["353", "500", "3"]
    assert root.findtext("segmented") == "0"
    first, second, third = root.findall("object")
    assert first.findtext("name") == "dog" and first.findtext("pose") == "Unspecified"
    assert first.findtext("truncated") == "1" and first.findtext("difficult") == "0"
    assert [first.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")] == [
        "48", "240", "195", "371",
    ]  # fmt: skip
    assert second.findtext("name") == "person & co" and second.findtext("pose") == "Left"
    assert second.findtext("difficult") == "1"
    assert float(second.findtext("bndbox/xmin")) == 8.5
    assert float(second.findtext("bndbox/ymax")) == 498.25
    assert third.find("truncated") is None and third.find("difficult") is None
    assert third.find("pose") is None
    # Same inputs, same bytes.
    again = write_voc_xml(tmp_path / "b.xml", "000001.jpg", 353, 500, objects, folder="VOC2007")
    assert path.read_bytes() == again.read_bytes()


def test_voc_xml_without_objects_and_bad_input():
    text = voc_xml_string("x.jpg", 10, 20, [])
    root = ET.fromstring(text)
    assert root.findall("object") == []
    with pytest.raises(DataError, match="xmin"):
        voc_xml_string("x.jpg", 10, 20, [VocXmlObject("a", ("1", 2, 3, 4))])
    with pytest.raises(DataError, match="finite"):
        voc_xml_string("x.jpg", 10, 20, [VocXmlObject("a", (1.0, float("nan"), 3, 4))])
    with pytest.raises(DataError, match="4 coordinates"):
        voc_xml_string("x.jpg", 10, 20, [VocXmlObject("a", (1, 2, 3))])
    with pytest.raises(DataError, match="width"):
        voc_xml_string("x.jpg", 10.5, 20, [])
