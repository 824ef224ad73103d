"""Representation metadata: each bound on both sides, and headers in and out.

The same inputs through real peers are in ``tests/node/shared/test_representation.py``;
decoding manifests that carry bad values is in ``test_unit_manifest.py``.
"""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from node.api.representation import representation_headers, representation_of
from node.errors import InvalidRequest, MetadataTooLarge
from node.model.representation import (
    MAX_FIELD_LENGTH,
    MAX_METADATA_BYTES,
    NO_REPRESENTATION,
    Representation,
)


def test_nothing_given_is_empty_and_false() -> None:
    assert not NO_REPRESENTATION
    assert not Representation.build()
    assert Representation.build(expires="0")
    assert Representation.build(metadata={"a": ""})


def test_metadata_is_sorted_so_equal_metadata_is_equal() -> None:
    one = Representation.build(metadata={"b": "2", "a": "1"})
    other = Representation.build(metadata=[("a", "1"), ("b", "2")])
    assert one == other
    assert one.metadata == (("a", "1"), ("b", "2"))


def test_standard_fields_are_bounded() -> None:
    Representation.build(content_disposition="x" * MAX_FIELD_LENGTH)
    with pytest.raises(InvalidRequest, match="longer"):
        Representation.build(content_disposition="x" * (MAX_FIELD_LENGTH + 1))


def test_metadata_is_bounded_in_utf8_bytes_of_names_and_values() -> None:
    name = "nn"
    value = "é" * (MAX_METADATA_BYTES // 2 - 1)  # 2 bytes each: 2 + 2046 = 2048
    assert len(name) + len(value.encode()) == MAX_METADATA_BYTES
    Representation.build(metadata={name: value})
    with pytest.raises(MetadataTooLarge):
        Representation.build(metadata={name: value + "x"})
    with pytest.raises(MetadataTooLarge):
        Representation.build(metadata={f"k{i}": "v" * 100 for i in range(20)})


@pytest.mark.parametrize(
    "given",
    [
        {"cache_control": "a\tb"},
        {"expires": "\x00"},
        {"content_encoding": "gz\udce9"},  # an undecodable byte, as aiohttp hands it on
        {"metadata": {"a": "line\nbreak"}},
        {"metadata": {"A": "upper"}},
        {"metadata": {"": "no name"}},
        {"metadata": {"a b": "space"}},
        {"metadata": [("a", "1"), ("a", "2")]},
    ],
)
def test_bad_values_are_refused(given: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Representation.build(**given)  # type: ignore[arg-type]
    assert not isinstance(caught.value, MetadataTooLarge)


def test_headers_in_and_out() -> None:
    sent = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Content-Encoding", "gzip"),
                ("Cache-Control", "public"),
                ("Cache-Control", "max-age=60"),
                ("X-Ringstore-Meta-Owner", "ops"),
                ("x-ringstore-meta-owner", "dev"),
                ("X-RINGSTORE-META-Build", "7"),
                ("Content-Type", "text/plain"),  # kept by the manifest itself, not here
            ]
        )
    )
    given = representation_of(sent)
    assert given == Representation(
        content_encoding="gzip",
        cache_control="public, max-age=60",
        metadata=(("build", "7"), ("owner", "ops, dev")),
    )
    assert representation_headers(given) == {
        "Content-Encoding": "gzip",
        "Cache-Control": "public, max-age=60",
        "X-Ringstore-Meta-build": "7",
        "X-Ringstore-Meta-owner": "ops, dev",
    }
    assert representation_headers(NO_REPRESENTATION) == {}


def test_a_metadata_header_needs_a_name() -> None:
    with pytest.raises(InvalidRequest, match="needs a name"):
        representation_of(CIMultiDictProxy(CIMultiDict([("X-Ringstore-Meta-", "x")])))
