"""S3 request documents (``node.api.s3.bodies``: DeleteObjects, CreateBucket) without a server."""

from __future__ import annotations

import pytest

from node.api.s3 import bodies

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
PLAIN = (
    f'<Delete xmlns="{NS}"><Quiet>true</Quiet>'
    "<Object><Key>a &amp; b</Key></Object>"
    "<Object><Key>old</Key><VersionId>v1</VersionId></Object></Delete>"
)
DTD = (
    '<?xml version="1.0" encoding="{encoding}"?>'
    '<!DOCTYPE Delete [<!ENTITY big "xxxxxxxxxxxxxxxx">]>'
    f'<Delete xmlns="{NS}"><Object><Key>&big;</Key></Object></Delete>'
)


def test_keys_versions_and_quiet_are_read() -> None:
    assert bodies.parse_delete(PLAIN.encode()) == ([("a & b", None), ("old", "v1")], True)
    utf16 = ('<?xml version="1.0" encoding="UTF-16"?>' + PLAIN).encode("utf-16")
    assert bodies.parse_delete(utf16)[0][0] == ("a & b", None)


@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16", "UTF-16LE", "UTF-16BE"])
def test_a_dtd_is_refused_in_any_encoding(encoding: str) -> None:
    # what a search of the bytes for <!DOCTYPE missed: the same document in UTF-16
    document = DTD.format(encoding=encoding).encode(encoding)  # UTF-16: with a BOM
    with pytest.raises(bodies.MalformedXML, match="DTD"):
        bodies.parse_delete(document)


@pytest.mark.parametrize("document", [b"", b"<Delete>", b"not xml", b"<Other/>", b"<Delete/>"])
def test_malformed_documents_are_refused(document: bytes) -> None:
    with pytest.raises(bodies.MalformedXML):
        bodies.parse_delete(document)


@pytest.mark.parametrize(
    ("flag", "quiet"),
    [("true", True), ("false", False), (" TRUE ", True), ("1", True), ("0", False)],
)
def test_quiet_is_a_boolean(flag: str, quiet: bool) -> None:
    document = f"<Delete><Quiet>{flag}</Quiet><Object><Key>k</Key></Object></Delete>"
    assert bodies.parse_delete(document.encode()) == ([("k", None)], quiet)


@pytest.mark.parametrize("flag", ["maybe", "yes", "", "2"])
def test_a_quiet_that_is_not_a_boolean_is_refused(flag: str) -> None:
    # Once read as false: a client asking for a quiet answer got the whole list.
    document = f"<Delete><Quiet>{flag}</Quiet><Object><Key>k</Key></Object></Delete>"
    with pytest.raises(bodies.MalformedXML, match="Quiet"):
        bodies.parse_delete(document.encode())


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"  \n",
        b"<CreateBucketConfiguration/>",
        b"<CreateBucketConfiguration xmlns='x'>"
        b"<LocationConstraint>eu</LocationConstraint></CreateBucketConfiguration>",
    ],
)
def test_a_bucket_configuration_may_be_empty_or_a_create_bucket_configuration(
    document: bytes,
) -> None:
    bodies.check_bucket_configuration(document)


@pytest.mark.parametrize("document", [b"junk", b"<Delete/>", b"<CreateBucketConfiguration>"])
def test_any_other_bucket_configuration_is_refused(document: bytes) -> None:
    with pytest.raises(bodies.MalformedXML):
        bodies.check_bucket_configuration(document)
