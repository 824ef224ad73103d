"""The Python client library of ringstore (see docs/client.md)."""

from client.async_client import AsyncClient
from client.body import BinaryReader, BodySource, ProgressCallback
from client.credentials import Credentials, find_credentials, read_credentials
from client.errors import (
    Conflict,
    CorruptData,
    FileChanged,
    FileNotFound,
    Forbidden,
    IncompleteBody,
    InsufficientStorage,
    InvalidName,
    InvalidRange,
    InvalidRequest,
    NotFound,
    PeerUnreachable,
    RingstoreError,
    ServerError,
    Unauthenticated,
    Unavailable,
    UnexpectedResponse,
)
from client.reader import AsyncFileReader
from client.records import (
    ChunkInfo,
    ClusterView,
    FileEntry,
    FileStat,
    Manifest,
    PeerInfo,
    PutResult,
    RingInfo,
)
from client.sync_client import Client, FileReader

__all__ = [
    "AsyncClient",
    "AsyncFileReader",
    "BinaryReader",
    "BodySource",
    "ChunkInfo",
    "Client",
    "ClusterView",
    "Conflict",
    "CorruptData",
    "Credentials",
    "FileChanged",
    "FileEntry",
    "FileNotFound",
    "FileReader",
    "FileStat",
    "Forbidden",
    "IncompleteBody",
    "InsufficientStorage",
    "InvalidName",
    "InvalidRange",
    "InvalidRequest",
    "Manifest",
    "NotFound",
    "PeerInfo",
    "PeerUnreachable",
    "ProgressCallback",
    "PutResult",
    "RingInfo",
    "RingstoreError",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedResponse",
    "find_credentials",
    "read_credentials",
]
