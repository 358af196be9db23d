//! One client connection through its phases: reading the request head,
//! writing a response (a page, a refusal, or the `101` of an upgrade), then
//! a WebSocket for an agent or a dashboard.
//!
//! Non-blocking contract: every function here reads or writes until the
//! socket says `WouldBlock` (the poller is edge-triggered) or its turn's
//! budget runs out, buffers what it could not write, and reports how the
//! socket ended when it did. Only I/O happens here: what the bytes mean is
//! for the engine to decide.

use super::http::{MAX_HEAD, Parsed, Request, parse_head};
use super::outbox::Outbox;
use super::shared::{Fault, Inbound, MAX_FRAME, SocketEnd};
use crate::tls::MaybeTls;
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::rc::Rc;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

pub type ServerStream = MaybeTls<ServerConnection>;

/// Bytes handed to tungstenite before one flush to the socket. What a
/// dashboard that stops reading holds in the relay is about twice this
/// (plus what its outbox keeps): 64 KiB cost 94 KB per such dashboard,
/// 16 KiB about 48 KB, with no cost to a fleet's latency (BENCHMARKS.md).
const WRITE_BATCH: usize = 16 * 1024;

/// Sized for many idle peers: tungstenite's default 128 KiB read buffer per
/// connection would cost over a gigabyte for 10,000 agents. `max_message`
/// bounds what the peer may send: [`MAX_FRAME`] for ours, more for a vStats
/// agent (only while such a message arrives is its buffer that large).
fn websocket_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(WRITE_BATCH)
        // A batch, what a blocked flush left, and one message of the
        // largest size we send: a full buffer would drop the connection.
        .max_write_buffer_size(2 * WRITE_BATCH + 2 * MAX_FRAME)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Frames one connection may read in one turn of the loop, before the
/// others get theirs.
pub const TURN_FRAMES: u32 = 64;
/// Payload bytes one connection may read in one turn of the loop (and
/// bytes of sample built from them). With 256 KiB, an agent flooding
/// 60 KB samples of dense JSON held every other connection some 7 ms a
/// round; with 64 KiB, 3 ms (BENCHMARKS.md, "One agent flooding").
pub const TURN_BYTES: usize = 64 * 1024;

/// How a turn of reading ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Turn {
    /// The socket said `WouldBlock`: its next edge will wake the loop.
    Drained,
    /// The turn's budget ran out with data perhaps still waiting. The
    /// poller is edge-triggered, so no event will come for that data: the
    /// loop must come back to this connection by itself. Meanwhile a flood
    /// waits in the socket buffer and TCP flow control slows its sender.
    Yielded,
}

/// Why reading stopped short of `WouldBlock`.
#[derive(Debug, PartialEq)]
pub enum Stop {
    /// The peer broke the protocol; the socket only discards from now on,
    /// and its next turn must come from the loop (see [`Turn::Yielded`]).
    Fault(Fault),
    Ended(SocketEnd),
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn io_end(e: &io::Error) -> SocketEnd {
    SocketEnd::Io(e.kind())
}

/// Reading the request head, within the head deadline.
pub struct HeadPhase {
    pub stream: ServerStream,
    /// What arrived; once the head is parsed, what followed it.
    buf: Vec<u8>,
}

impl HeadPhase {
    pub fn new(stream: ServerStream) -> HeadPhase {
        HeadPhase {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads what has arrived; `Ok(Some)` once the head is complete (or
    /// refused), `Ok(None)` to wait for more.
    pub fn read(&mut self) -> Result<Option<Request>, SocketEnd> {
        let mut chunk = [0u8; 2048];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(SocketEnd::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    match parse_head(&self.buf) {
                        Parsed::Partial if self.buf.len() < MAX_HEAD => continue,
                        Parsed::Partial => return Ok(Some(Request::Refuse(431))),
                        Parsed::Complete(head, len) => {
                            self.buf.drain(..len);
                            return Ok(Some(Request::Complete(head)));
                        }
                        Parsed::Refuse(status) => {
                            self.buf.clear();
                            return Ok(Some(Request::Refuse(status)));
                        }
                    }
                }
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) => return Err(io_end(&e)),
            }
        }
    }

    /// The stream, and the bytes that came after the head.
    pub fn into_parts(self) -> (ServerStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}

/// A response body read from a file a chunk at a time, so a download
/// costs the relay one chunk of memory however large the file.
pub struct Body {
    file: std::fs::File,
    left: u64,
}

impl Body {
    /// The first `len` bytes of `file`.
    pub fn new(file: std::fs::File, len: u64) -> Body {
        Body { file, left: len }
    }
}

/// Bytes of a file read into memory at a time.
const BODY_CHUNK: usize = 64 * 1024;

/// Bytes of a response written in one turn of the loop: a thousand clients
/// asking for a body of megabytes (`/metrics` of a large fleet) cost the
/// loop this much each per turn, not the body.
pub const RESPONSE_TURN_BYTES: usize = 64 * 1024;

/// The kernel's send buffer for a response larger than this, asked for
/// once: Linux otherwise grows it to 4 MiB for a client that does not
/// read, and a few hundred such clients of a large body would pin
/// gigabytes of kernel memory. 128 KiB (the kernel doubles it) still moves
/// 5 MB/s over a path of 50 ms.
pub const RESPONSE_SEND_BUFFER: usize = 128 * 1024;

/// How a turn of writing a response ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Written {
    /// Everything is out.
    All,
    /// The socket is full; its next edge will wake the loop.
    Blocked,
    /// The turn's budget ([`RESPONSE_TURN_BYTES`]) ran out with the socket still
    /// writable: the loop must come back by itself.
    Yielded,
}

/// What a response still has to write.
enum Pending {
    /// The response (or a file's head), perhaps shared with other requests.
    Built(Rc<[u8]>),
    /// The chunk of the file being sent.
    Chunk(Vec<u8>),
}

impl Pending {
    fn bytes(&self) -> &[u8] {
        match self {
            Pending::Built(bytes) => bytes,
            Pending::Chunk(bytes) => bytes,
        }
    }
}

/// Writing a response the relay produced itself.
pub struct RespondPhase {
    pub stream: ServerStream,
    pending: Pending,
    sent: usize,
    body: Option<Body>,
    /// Bytes that came after the request head (the first WebSocket frames
    /// of an upgrade).
    rest: Vec<u8>,
}

impl RespondPhase {
    pub fn new(head: HeadPhase, out: Rc<[u8]>, body: Option<Body>) -> RespondPhase {
        let (stream, rest) = head.into_parts();
        let length = out.len() as u64 + body.as_ref().map_or(0, |body| body.left);
        if length > RESPONSE_SEND_BUFFER as u64 {
            // Best effort: a socket that refuses keeps the kernel's size.
            let _ = nix::sys::socket::setsockopt(
                stream.tcp(),
                nix::sys::socket::sockopt::SndBuf,
                &RESPONSE_SEND_BUFFER,
            );
        }
        RespondPhase {
            stream,
            pending: Pending::Built(out),
            sent: 0,
            body,
            rest,
        }
    }

    /// Writes on, at most [`RESPONSE_TURN_BYTES`]; returns how the turn
    /// ended and how many bytes it wrote.
    pub fn write(&mut self) -> Result<(Written, usize), SocketEnd> {
        let mut written = 0;
        loop {
            while self.sent < self.pending.bytes().len() {
                if written >= RESPONSE_TURN_BYTES {
                    return Ok((Written::Yielded, written));
                }
                let pending = &self.pending.bytes()[self.sent..];
                let room = pending.len().min(RESPONSE_TURN_BYTES - written);
                match self.stream.write(&pending[..room]) {
                    Ok(0) => return Err(SocketEnd::Closed),
                    Ok(n) => {
                        self.sent += n;
                        written += n;
                    }
                    Err(e) if would_block(&e) => return Ok((Written::Blocked, written)),
                    Err(e) => return Err(io_end(&e)),
                }
            }
            let Some(body) = &mut self.body else {
                break;
            };
            if body.left == 0 {
                break;
            }
            let size = BODY_CHUNK.min(usize::try_from(body.left).unwrap_or(BODY_CHUNK));
            let mut chunk = match std::mem::replace(&mut self.pending, Pending::Chunk(Vec::new())) {
                Pending::Chunk(chunk) => chunk,
                Pending::Built(_) => Vec::with_capacity(BODY_CHUNK),
            };
            chunk.resize(size, 0);
            self.sent = 0;
            match body.file.read(&mut chunk) {
                // The file shrank under us: the promised length can't be met.
                Ok(0) => return Err(SocketEnd::Io(io::ErrorKind::UnexpectedEof)),
                Err(e) => return Err(io_end(&e)),
                Ok(n) => {
                    chunk.truncate(n);
                    body.left -= n as u64;
                    self.pending = Pending::Chunk(chunk);
                }
            }
        }
        match self.stream.flush() {
            Ok(()) => Ok((Written::All, written)),
            Err(e) if would_block(&e) => Ok((Written::Blocked, written)),
            Err(e) => Err(io_end(&e)),
        }
    }

    /// The WebSocket this connection becomes after a `101`, taking
    /// messages of up to `max_message` bytes.
    pub fn into_websocket(self, max_message: usize) -> Socket {
        Socket::with_limit(self.stream, self.rest, max_message)
    }
}

/// An open WebSocket, over a client's [`ServerStream`] (or, in tests and
/// fuzzing, any other `Read + Write`).
pub struct Socket<S: Read + Write = ServerStream> {
    ws: WebSocket<S>,
    /// The peer broke the protocol: tungstenite must not read again (its
    /// frame state is past repair), so what arrives is thrown away until
    /// the peer closes or the close timeout passes.
    discarding: bool,
}

impl<S: Read + Write> Socket<S> {
    /// A socket taking messages of up to [`MAX_FRAME`] bytes.
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub fn new(stream: S, rest: Vec<u8>) -> Socket<S> {
        Socket::with_limit(stream, rest, MAX_FRAME)
    }

    /// A socket taking messages of up to `max_message` bytes (larger:
    /// [`Fault::TooLarge`]).
    pub fn with_limit(stream: S, rest: Vec<u8>, max_message: usize) -> Socket<S> {
        Socket {
            ws: WebSocket::from_partially_read(
                stream,
                rest,
                Role::Server,
                Some(websocket_config(max_message)),
            ),
            discarding: false,
        }
    }

    /// Reads the frames that have arrived, up to one turn's budget
    /// ([`TURN_FRAMES`], [`TURN_BYTES`]), passing each to `each` as it is
    /// read, so frames read before a close or the end of the stream are
    /// passed on too. `each` returns the bytes of work the frame cost
    /// beyond its own length (a sample built from it), which the byte
    /// budget counts too. Pings are answered (the pong waits for the next
    /// flush).
    pub fn read(&mut self, mut each: impl FnMut(Inbound) -> usize) -> Result<Turn, Stop> {
        if self.discarding {
            return self.discard();
        }
        let (mut frames, mut bytes) = (0, 0);
        while frames < TURN_FRAMES && bytes < TURN_BYTES {
            match self.ws.read() {
                Ok(message) => {
                    frames += 1;
                    bytes += message.len();
                    bytes += match message {
                        Message::Text(text) => each(Inbound::Text(&text)),
                        Message::Binary(_) => each(Inbound::Binary),
                        Message::Close(frame) => {
                            each(Inbound::Close(frame.map(|f| u16::from(f.code))))
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                            each(Inbound::Control)
                        }
                    };
                }
                Err(tungstenite::Error::Io(e)) if would_block(&e) => return Ok(Turn::Drained),
                Err(tungstenite::Error::Io(e)) => return Err(Stop::Ended(io_end(&e))),
                Err(tungstenite::Error::Capacity(_)) => return Err(self.fault(Fault::TooLarge)),
                Err(tungstenite::Error::Utf8(_)) => return Err(self.fault(Fault::NotUtf8)),
                Err(tungstenite::Error::Protocol(e)) => {
                    return Err(self.fault(Fault::Protocol(e.to_string())));
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err(Stop::Ended(SocketEnd::Closed));
                }
                Err(_) => return Err(Stop::Ended(SocketEnd::Io(io::ErrorKind::Other))),
            }
        }
        Ok(Turn::Yielded)
    }

    /// Takes messages of up to `max_message` bytes from now on (a vStats
    /// agent, once its `auth` is accepted).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.ws.set_config(|config| {
            config.max_message_size = Some(max_message);
            config.max_frame_size = Some(max_message);
        });
    }

    fn fault(&mut self, fault: Fault) -> Stop {
        self.discarding = true;
        Stop::Fault(fault)
    }

    /// Reads and drops raw bytes until `WouldBlock` or one turn's byte
    /// budget.
    fn discard(&mut self) -> Result<Turn, Stop> {
        let mut scratch = [0u8; 4096];
        let mut bytes = 0;
        while bytes < TURN_BYTES {
            match self.ws.get_mut().read(&mut scratch) {
                Ok(0) => return Err(Stop::Ended(SocketEnd::Closed)),
                Ok(n) => bytes += n,
                Err(e) if would_block(&e) => return Ok(Turn::Drained),
                Err(e) => return Err(Stop::Ended(io_end(&e))),
            }
        }
        Ok(Turn::Yielded)
    }

    /// Queues a close frame and pushes it out as far as the socket takes.
    /// (The engine asks once per connection, and then no longer hands out
    /// the dashboard's outbox.)
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SocketEnd> {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.ws.close(Some(frame));
        self.flush().map(|_| ())
    }

    /// Queues one text message and pushes it out as far as the socket
    /// takes; the rest goes with the next flush.
    pub fn send(&mut self, text: &str) -> Result<(), SocketEnd> {
        match self.ws.write(Message::text(text)) {
            // Buffered by tungstenite: the flush below, or a later one.
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
            Err(tungstenite::Error::Io(e)) => return Err(io_end(&e)),
            Err(_) => return Err(SocketEnd::Io(io::ErrorKind::Other)),
        }
        self.flush().map(|_| ())
    }

    pub fn ping(&mut self) -> Result<(), SocketEnd> {
        let _ = self.ws.write(Message::Ping(Default::default()));
        self.flush().map(|_| ())
    }

    /// Pushes out what tungstenite holds (pongs, pings, frames); `true`
    /// when the socket is full with some still held.
    pub fn flush(&mut self) -> Result<bool, SocketEnd> {
        match self.ws.flush() {
            Ok(()) => Ok(false),
            Err(tungstenite::Error::Io(e)) if would_block(&e) => Ok(true),
            Err(tungstenite::Error::Io(e)) => Err(io_end(&e)),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Err(SocketEnd::Closed)
            }
            Err(_) => Err(SocketEnd::Io(io::ErrorKind::Other)),
        }
    }

    /// Moves messages from `outbox` to the socket until either runs dry;
    /// returns how many messages and bytes went out, and whether the
    /// socket is full.
    pub fn pump(&mut self, outbox: &mut Outbox) -> Result<Pumped, SocketEnd> {
        let mut pumped = Pumped::default();
        loop {
            if self.flush()? {
                pumped.blocked = true;
                return Ok(pumped);
            }
            let mut batch = 0;
            while batch < WRITE_BATCH {
                let Some(message) = outbox.pop() else { break };
                batch += message.len();
                pumped.messages += 1;
                match self.ws.write(Message::Text(message)) {
                    Ok(()) => {}
                    // Buffered by tungstenite; the flush above retries.
                    Err(tungstenite::Error::Io(e)) if would_block(&e) => break,
                    Err(tungstenite::Error::Io(e)) => return Err(io_end(&e)),
                    Err(_) => return Err(SocketEnd::Io(io::ErrorKind::Other)),
                }
            }
            pumped.bytes += batch as u64;
            if batch == 0 {
                return Ok(pumped);
            }
        }
    }
}

/// What one pump moved.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pumped {
    pub messages: u64,
    pub bytes: u64,
    /// The socket is full with bytes still held.
    pub blocked: bool,
}
