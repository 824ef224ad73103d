"""The Python client library of ringstore (see docs/client.md)."""

from client.async_client import AsyncClient
from client.body import BinaryReader, BodySource, ProgressCallback
from client.errors import (
    CorruptData,
    FileChanged,
    FileNotFound,
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
    "CorruptData",
    "FileChanged",
    "FileEntry",
    "FileNotFound",
    "FileReader",
    "FileStat",
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
]
