"""Manifest calls and small chunks between two peers over one long-lived WebSocket (RFC
6455): a channel.

A batch of manifest calls as an HTTP request costs both peers far more than the calls: on
these 2-core VMs a storage peer spent ~2 ms of CPU per batch request of ~2.5 manifest
writes, of which the writes themselves (log append, group commit) were ~0.5 ms; the rest
was aiohttp's client and server request paths, the middlewares, a signature each way, and
the answer's headers. A channel pays for those once, when it opens: the caller makes one
signed ``GET CHANNEL`` (``node.cluster.auth``: the receiver checks membership, freshness
and nonce, and answers 421 if it is not the peer meant), the receiver upgrades it, and
from then on each batch is one binary frame each way::

    head (34 bytes): version (1), kind (1), sequence number (8, big-endian), sender's key
                     id (8), MAC (16): AES-GMAC under a key of the channel and direction
                     derived from the sender's secret, the upgrade's nonce and the
                     receiver's salt, over the body, with the kind and sequence number in
                     its IV
                     (``node.cluster.auth.FrameGmac``)
    body:            msgpack ``ManifestCalls`` (kind CALLS), ``ManifestConfirmations``
                     (CONFIRMATIONS), ``ChunkWrite`` (CHUNK_WRITE), ``ChunkRead``
                     (CHUNK_READ), or the answer to one: ``ManifestAnswers`` or
                     ``ChunkAnswer`` (ANSWERS)

On a version 2 channel the receiver speaks first: one binary message, ``HELLO``, of 18
bytes (version 2, kind ``HELLO``, then ``SALT_SIZE`` random bytes that go into both
directions' keys), before any frame; the caller sends none before it has it. The salt needs
no MAC: one changed on the way only gives the two ends different keys, and the channel
closes at the first frame.

The frame format is the WebSocket subprotocol (RFC 6455 section 1.9) the receiver selects
from those the caller offers, newest first (``SUBPROTOCOLS``): ``ringstore.chunks.2`` is the
above; ``ringstore.chunks.1`` (a peer of the release before) has a 50-byte head whose MAC is
HMAC-SHA256 over the nonce, version, kind, sequence number and body, one key both ways
(``FrameHmac``: twelve times GMAC's CPU per byte, ~0.6 ms per MiB here); no subprotocol
(two releases before) is version 1 without chunk frames. So peers of three releases
open channels to one another during an upgrade. The caller names its offer again in
``OFFERED``, which its signature covers, and the receiver refuses an upgrade whose
``Sec-WebSocket-Protocol`` differs (``changed_offer``): no one on the path can make two
peers of this release use version 1.

A chunk of up to ``FRAME_CHUNK_MAX`` bytes (a file of up to 5 MiB has no larger one), or a
range of one, goes as one frame each way where the receiver selected one of
``SUBPROTOCOLS`` in its upgrade. Over HTTP, each cost its holder ~1.1 ms of CPU
in the request's layers (a 1 MiB GET asks 4-5 holders; ``perf record -a`` of one,
2026-12-02: 61% Python, its ``sendfile`` 4%), where a frame pays the MAC of its bytes (GMAC:
~0.01 ms per 200 KiB here; HMAC-SHA256 ~0.12 ms) and copies (msgpack, the sealed frame,
aiohttp's masking of a caller's frame).
A caller writes one frame at a time, each once the one before has drained to the kernel, so
concurrent calls do not pile their frames up in the connection's buffer. Larger chunks
stream as requests, read with sendfile(2).

The caller numbers its frames 1, 2, 3...; the receiver refuses any other number (a replay)
and answers each frame with the same number, in any order, as soon as its calls are done
(up to ``FRAMES_IN_FLIGHT`` frames and ``BYTES_IN_FLIGHT`` bytes of them at once, a larger
frame alone; it reads no further meanwhile, so TCP holds the caller back). A frame that
fails its MAC or is out of order closes the channel with code 1008, one that cannot be read
(or a text message) with 1003, after a rate-limited warning (``Authenticator.note_refusal``):
a member's frames never do that; a caller refuses an answer that fails its MAC, or a
first message that is no hello, the same way. The calls in flight then
fail as an HTTP request cut off would (``PeerUnavailable``), and the next call opens a new
channel. A call not answered within the peer timeout fails the same way and closes the
channel (a hung peer: the calls behind it would wait out the same timeout). Both ends ping
every ``HEARTBEAT`` seconds and close a channel whose other end stopped answering pings (a
vanished host), so no channel outlives its use by more than that.

A receiver that stops reads no new frame, answers those under way (for at most the time
it is given), then closes with 1001. A peer of a release before channels answers the
upgrade 404; the caller then sends its batches as HTTP requests (``MANIFEST_BATCH``) and
tries a channel again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from node.cluster.auth import SALT_SIZE, FrameKeys
from node.cluster.protocol import FRAME_CHUNK_MAX
from node.errors import PeerUnavailable, RingstoreError, Unauthenticated

log = logging.getLogger(__name__)

CHANNEL = "/internal/manifests/channel"  # GET, upgraded to a WebSocket
CALLS, CONFIRMATIONS, ANSWERS, CHUNK_WRITE, CHUNK_READ = 1, 2, 3, 4, 5  # frame kinds
CALL_KINDS = frozenset({CALLS, CONFIRMATIONS, CHUNK_WRITE, CHUNK_READ})  # a caller sends
HELLO = 6  # a version 2 receiver's first message: its salt (module docstring)
# The WebSocket subprotocols (RFC 6455 section 1.9) of the frame versions (module
# docstring), newest first: a caller offers them all, a receiver selects the first it takes.
# A receiver of a release before chunk frames selects none: version 1, chunks as requests.
SUBPROTOCOLS = ("ringstore.chunks.2", "ringstore.chunks.1")
FRAME_VERSIONS = {"ringstore.chunks.2": 2, "ringstore.chunks.1": 1}
# The subprotocols a caller offered, again in a header its upgrade's signature covers
# (``node.cluster.auth``: every X-Ringstore-* header): ``changed_offer``.
OFFERED = "X-Ringstore-Frames"
FRAMES_IN_FLIGHT = 8  # frames of one channel a receiver works on at once
BYTES_IN_FLIGHT = 16 << 20  # and their bytes (a batch is <= 1 MiB but for one huge manifest)
# The largest frame of calls a receiver takes: a batch of at most MAX_MANIFEST_CALLS calls,
# one of which may be a huge file's manifest; as large as the app takes an HTTP request
# body. Answers (whole manifests, up to 64 of them) have no cap, as an HTTP answer had none.
MAX_FRAME = 256 << 20
CLOSE_TIMEOUT = 2.0  # seconds a closing side waits for the other's close frame
HEARTBEAT = 30.0  # seconds between pings; no pong within half of it closes the channel

Answer = Callable[[int, memoryview], Awaitable[bytes]]  # (kind, body) -> the answer's body
_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})
KeysFor = Callable[[int, bytes], FrameKeys]  # (version, the receiver's salt) -> the keys
SaltedKeys = Callable[[bytes], FrameKeys]  # the receiver's salt -> a caller's keys
Refused = Callable[[str, str], None]  # (what, why): a frame refused, to be logged


def frame_version(protocol: str | None) -> int:
    """The frame version of a channel whose receiver selected ``protocol`` (None: none)."""
    return FRAME_VERSIONS.get(protocol or "", 1)


def changed_offer(signed: str | None, sent: str | None) -> str | None:
    """Why an upgrade's subprotocols (``sent``: its ``Sec-WebSocket-Protocol``, which no
    signature covers) are not those its caller signed (``signed``: its ``OFFERED``), as
    when someone on the path strips ``ringstore.chunks.2`` to have two peers of this release
    use version 1; None if they are the same, or the caller signed none (a release before
    this header)."""
    if signed is None:
        return None
    if _names(signed) == _names(sent or ""):
        return None
    return f"subprotocols {sent!r} where the caller signed {signed!r}"


def _names(protocols: str) -> list[str]:
    return [name.strip() for name in protocols.split(",") if name.strip()]


def hello(salt: bytes) -> bytes:
    """A version 2 receiver's first message."""
    return bytes((2, HELLO)) + salt


def salt_of(kind: WSMsgType, data: object) -> bytes:
    """The salt of a version 2 receiver's first message (its type and data); raises
    Unauthenticated if it is no hello."""
    if kind != WSMsgType.BINARY or not isinstance(data, bytes):
        raise Unauthenticated(f"the channel began with a {kind.name} message, not a hello")
    if len(data) != 2 + SALT_SIZE or data[:2] != bytes((2, HELLO)):
        raise Unauthenticated(f"the channel began with {len(data)} bytes, not a hello")
    return data[2:]


class Channel:
    """The caller's end of an open channel: ``call`` sends a frame and returns the body of
    its answer. Fails every call in flight once the channel closes for any reason. Frames
    of ``version`` 2 are sealed once the receiver's hello came (``keys`` of its salt)."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[bool],
        keys: SaltedKeys,
        version: int,
        peer: str,
        timeout: float,
        refused: Refused,
        chunks: bool = False,
    ) -> None:
        self._ws = ws
        self._salted = keys
        self.version = version  # of the frames (the subprotocol the receiver selected)
        self._keys = None if version >= 2 else keys(b"")  # None: until the hello
        self._keyed = asyncio.Event()  # set once keyed, or closed
        if self._keys is not None:
            self._keyed.set()
        self._peer = peer
        self._timeout = timeout
        self._refused = refused
        self.chunks = chunks  # the receiver takes chunk frames (selected a subprotocol)
        self._sending = asyncio.Lock()
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[memoryview]] = {}
        self._closed: str | None = None  # why, once closed
        self._counted = False  # a failure of this channel counted against the peer
        self._reader = asyncio.ensure_future(self._read())

    def __repr__(self) -> str:
        state = f"closed: {self._closed}" if self._closed else f"{len(self._waiting)} waiting"
        return f"Channel({self._peer}, sent={self._seq}, {state})"

    @property
    def open(self) -> bool:
        return self._closed is None

    @property
    def finished(self) -> bool:
        """Closed, and nothing of it left running."""
        return self._reader.done()

    async def call(self, kind: int, body: bytes) -> memoryview:
        """Send one frame of ``kind``; the body of its answer. Raises PeerUnavailable if
        the channel closes first or no answer comes within the timeout (which takes in the
        wait for a version 2 receiver's hello; then it closes, and the other calls fail
        without counting against the peer again: one failure of a channel counts once). The
        body is not held once sent (a chunk's, while its holder writes it)."""
        exchange = self._exchange(kind, body)
        del body
        try:
            return await asyncio.wait_for(exchange, self._timeout)
        except asyncio.TimeoutError as exc:
            self._close(f"no answer within {self._timeout}s", counted=False)
            raise self._failure(f"no answer within {self._timeout}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            self._close(str(exc) or type(exc).__name__, counted=False)
            raise self._failure(f"channel: {exc}") from exc
        except asyncio.CancelledError:
            # aiohttp's writers share one drain future: another call's timeout cancels it
            # under every send waiting on a hung peer. Only a cancel this task was asked
            # for is passed on (Python 3.11+ can tell; 3.10 passes every one on).
            cancelling = getattr(asyncio.current_task(), "cancelling", None)
            if cancelling is None or cancelling():
                raise
            self._close("a send was cut short", counted=False)
            raise self._failure("channel: a send was cut short") from None

    async def _exchange(self, kind: int, body: bytes) -> memoryview:
        """Send (waiting while the receiver reads nothing) and wait for the answer.

        One frame is written at a time, each after the one before has drained to the
        kernel: concurrent senders each wrote theirs at once, and 64 PUTs of 1 MiB files
        through one peer piled their chunk frames up in the connection's buffer (peak RSS
        128.7 -> 151.7 MiB, ``bench/memory.py --clients 200``). Then checked, numbered and
        written in one step of the loop (aiohttp 3.14 writes an uncompressed frame before
        it first waits: ``WebSocketWriter.send_frame``): a call cancelled before it leaves
        leaves no gap in the numbers, and none is sent on a channel already closed. One
        cancelled after it left stays waiting, and its answer is dropped when it comes."""
        async with self._sending:
            await self._keyed.wait()
            answer = await self._send(kind, body)
        del body
        return await answer

    async def _send(self, kind: int, body: bytes) -> asyncio.Future[memoryview]:
        keys = self._keys
        if self._closed is not None or keys is None:  # (closed while it waited)
            raise self._failure(f"channel closed: {self._closed}")
        self._seq += 1
        seq = self._seq
        answer: asyncio.Future[memoryview] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = answer
        try:
            await self._ws.send_bytes(keys.seal(kind, seq, body))
        except BaseException:
            answer.cancel()  # nobody will wait for it (it stays listed: its answer is dropped)
            raise
        return answer

    async def close(self) -> None:
        """Close the channel (calls in flight fail) and wait until it is closed."""
        self._close("closed by this peer", counted=False)
        await asyncio.gather(self._reader, return_exceptions=True)

    def _failure(self, why: str) -> PeerUnavailable:
        """The error of a failed call: the channel's first counts against the peer."""
        failure = PeerUnavailable(self._peer, why, counted=not self._counted)
        self._counted = True
        return failure

    def _close(self, why: str, counted: bool) -> None:
        """Close, failing the calls in flight; ``counted``: the first of them counts against
        the peer unless a failure of this channel did (the caller closing it counts its own:
        ``_failure``)."""
        if self._closed is None:
            self._closed = why
            self._keyed.set()  # (a call waiting for the hello fails)
            if asyncio.current_task() is not self._reader:  # (it ends by itself)
                self._reader.cancel()
        for answer in self._waiting.values():
            if not answer.done():
                failure = f"channel closed: {why}"
                if counted:
                    answer.set_exception(self._failure(failure))
                else:
                    answer.set_exception(PeerUnavailable(self._peer, failure, counted=False))
        self._waiting.clear()

    async def _read(self) -> None:
        why = "closed by the other peer"
        try:
            keys = self._keys
            if keys is None:  # the receiver speaks first
                first = await self._ws.receive()
                if first.type in _ENDED:
                    cause = self._ws.exception() or f"code {self._ws.close_code}"
                    why = f"closed before its hello ({cause})"
                    return
                keys = self._keys = self._salted(salt_of(first.type, first.data))
                self._keyed.set()
            async for message in self._ws:
                if message.type != WSMsgType.BINARY:
                    why = f"a {message.type.name} message"
                    break
                kind, seq, body = keys.open(message.data)
                if kind != ANSWERS or seq not in self._waiting:
                    raise Unauthenticated(f"a frame of kind {kind} numbered {seq}: no answer due")
                answer = self._waiting.pop(seq)
                if not answer.done():  # (its caller went away)
                    answer.set_result(body)
            else:
                why = f"closed by the other peer (code {self._ws.close_code})"
        except Unauthenticated as exc:
            what = "its hello" if self._keys is None else "an answer"
            why = f"refused {what}: {exc.message}"
            self._refused(f"a frame from {self._peer}", why)
        except (aiohttp.ClientError, OSError) as exc:
            why = str(exc) or type(exc).__name__
        finally:
            self._close(self._closed or why, counted=True)
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._ws.close(), CLOSE_TIMEOUT)


class ServedChannel:
    """The receiver's end of an upgraded channel: ``run`` answers its frames until it
    closes; ``stop`` ends it gracefully. ``answer(kind, body)`` is an answer's body, or
    raises a RingstoreError (the frame is unreadable: the channel closes)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        keys: KeysFor,
        answer: Answer,
        who: str,
        refused: Refused,
    ) -> None:
        self.ws = ws
        self._keys_for = keys
        self._keys: FrameKeys | None = None  # once upgraded: of the subprotocol selected
        self._answer = answer
        self._who = who
        self._refused = refused
        self._frames_in_work = 0  # frames being worked on (their answers not yet sent)
        self._bytes_in_work = 0  # and their bytes
        self._freed = asyncio.Event()  # set when one is done
        self._working: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"ServedChannel({self._who}, {len(self._working)} frames under way)"

    async def run(self) -> str:
        """Answer frames until the channel closes; why it closed. Frames under way are
        answered first, as a request's handler finishes when its client goes away."""
        why = "closed by the caller"
        expected = 1
        if self._stopping.is_set():  # told to stop while it was being upgraded
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"stopping")
            return "stopping"
        version = frame_version(self.ws.ws_protocol)
        salt = secrets.token_bytes(SALT_SIZE) if version >= 2 else b""
        keys = self._keys = self._keys_for(version, salt)
        try:
            if salt:
                try:
                    await self.ws.send_bytes(hello(salt))
                except (ConnectionError, RuntimeError):
                    return "closed before its hello was sent"
            async for message in self.ws:
                if self._stopping.is_set():  # read, never answered: its calls fail on close
                    continue
                if message.type == WSMsgType.ERROR:  # the connection failed (no pong, reset)
                    why = f"connection lost: {self.ws.exception()}"
                    break
                if message.type != WSMsgType.BINARY:
                    why = f"a {message.type.name} message"
                    self._refused(f"a channel from {self._who}", why)
                    await self.ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary only")
                    break
                try:
                    kind, seq, body = keys.open(message.data)
                    if seq != expected:
                        raise Unauthenticated(f"frame {seq} where {expected} was due (a replay?)")
                    if kind not in CALL_KINDS:
                        raise Unauthenticated(f"a frame of kind {kind} is no call")
                except Unauthenticated as exc:
                    why = exc.message
                    self._refused(f"a frame from {self._who}", why)
                    await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"refused")
                    break
                expected += 1
                # a chunk read is counted at the most it may answer: its answer is the bytes
                size = FRAME_CHUNK_MAX if kind == CHUNK_READ else len(message.data)
                await self._room_for(size)
                if self._stopping.is_set():  # told to stop while it waited: not begun
                    self._done_with(size)
                    continue
                task = asyncio.ensure_future(self._work(kind, seq, body, size))
                self._working.add(task)
                task.add_done_callback(self._working.discard)
        finally:
            await asyncio.gather(*self._working, return_exceptions=True)
        return why

    async def _room_for(self, size: int) -> None:
        """Wait until a frame of ``size`` bytes may be worked on (alone if it is larger than
        ``BYTES_IN_FLIGHT``), and count it in."""
        while self._frames_in_work and (
            self._frames_in_work >= FRAMES_IN_FLIGHT or self._bytes_in_work + size > BYTES_IN_FLIGHT
        ):
            self._freed.clear()
            await self._freed.wait()
        self._frames_in_work += 1
        self._bytes_in_work += size

    async def stop(self, grace: float) -> None:
        """Read no new frame, answer those under way (for at most ``grace`` seconds), then
        close with 1001 (going away)."""
        self._stopping.set()
        if not self.ws.prepared:  # not yet upgraded: ``run`` closes it as it starts
            return
        if self._working:
            await asyncio.wait(set(self._working), timeout=grace)
        with contextlib.suppress(asyncio.TimeoutError):  # (a hung caller reads nothing)
            await asyncio.wait_for(
                self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"stopping"), CLOSE_TIMEOUT
            )

    async def _work(self, kind: int, seq: int, body: memoryview, size: int) -> None:
        """Answer one frame; it counts against the limits until its answer is sent (a
        caller that reads no answers gets no more frames worked on)."""
        keys = self._keys
        assert keys is not None  # (``run`` set them before it took a frame)
        try:
            try:
                answered = await self._answer(kind, body)
            except RingstoreError as exc:  # a member's frame we cannot read: a bug there
                self._refused(f"frame {seq} from {self._who}", exc.message)
                await self.ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"unreadable")
                return
            except Exception:  # a bug here: the caller's calls fail now, not at their timeout
                log.exception("closing the channel from %s: frame %d failed", self._who, seq)
                await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
                return
            with contextlib.suppress(ConnectionError, RuntimeError):  # closed: nobody waits
                await self.ws.send_bytes(keys.seal(ANSWERS, seq, answered))
        finally:
            self._done_with(size)

    def _done_with(self, size: int) -> None:
        self._frames_in_work -= 1
        self._bytes_in_work -= size
        self._freed.set()


class OpenChannels:
    """The channels other peers have open to this one, with their upgraded requests."""

    def __init__(self) -> None:
        self.serving: dict[ServedChannel, web.BaseRequest] = {}
        self.stopping = False

    def __repr__(self) -> str:
        return f"OpenChannels({len(self.serving)}, stopping={self.stopping})"

    async def stop(self, grace: float) -> None:
        """Stop every channel (``ServedChannel.stop``) and accept no new one."""
        self.stopping = True
        await asyncio.gather(*(served.stop(grace) for served in list(self.serving)))
