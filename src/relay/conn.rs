//! One client connection through its phases: reading the request head,
//! writing a response (a page, a refusal, or the `101` of an upgrade), then
//! a WebSocket for an agent or a dashboard.
//!
//! Non-blocking contract: every function here reads or writes until the
//! socket says `WouldBlock` (the poller is edge-triggered), buffers what it
//! could not write, and reports `Done` when the connection should be dropped.

use super::http::{MAX_HEAD, Parsed, parse_head};
use super::outbox::Outbox;
use crate::tls::MaybeTls;
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::time::Instant;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

pub type Stream = MaybeTls<ServerConnection>;

/// Largest agent or dashboard frame accepted (larger: close 1009).
pub const MAX_FRAME: usize = 64 * 1024;
/// Bytes handed to tungstenite before one flush to the socket.
const WRITE_BATCH: usize = 64 * 1024;

/// Sized for many idle peers: tungstenite's default 128 KiB read buffer per
/// connection would cost over a gigabyte for 10,000 agents.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(WRITE_BATCH)
        .max_write_buffer_size(4 * WRITE_BATCH)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
}

/// Frames one connection may read in one turn of the loop, before the
/// others get theirs.
pub const TURN_FRAMES: u32 = 64;
/// Payload bytes one connection may read in one turn of the loop.
pub const TURN_BYTES: usize = 256 * 1024;

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

/// The connection is finished; drop it.
#[derive(Debug, PartialEq)]
pub struct Done;

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Reading the request head, within the head deadline.
pub struct HeadPhase {
    pub stream: Stream,
    buf: Vec<u8>,
}

impl HeadPhase {
    pub fn new(stream: Stream) -> HeadPhase {
        HeadPhase {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads what has arrived; `Ok(Some)` once the head is complete (or
    /// refused), `Ok(None)` to wait for more.
    pub fn read(&mut self) -> Result<Option<(Parsed, Vec<u8>)>, Done> {
        let mut chunk = [0u8; 2048];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Done),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    match parse_head(&self.buf) {
                        Parsed::Partial if self.buf.len() < MAX_HEAD => continue,
                        Parsed::Partial => return Ok(Some((Parsed::Refuse(431), Vec::new()))),
                        Parsed::Complete(head, len) => {
                            let rest = self.buf.split_off(len);
                            return Ok(Some((Parsed::Complete(head, len), rest)));
                        }
                        refused => return Ok(Some((refused, Vec::new()))),
                    }
                }
                Err(e) if would_block(&e) => return Ok(None),
                Err(_) => return Err(Done),
            }
        }
    }
}

/// What becomes of a connection once its response is written.
pub enum Then {
    Close,
    /// Send this file after the response head (while writing), then close.
    SendFile(Body),
    Agent {
        server_id: String,
        rest: Vec<u8>,
    },
    Dashboard {
        rest: Vec<u8>,
    },
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

/// How a turn of writing a response ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Written {
    /// Everything is out.
    All,
    /// The socket is full; its next edge will wake the loop.
    Blocked,
    /// The turn's budget ([`TURN_BYTES`]) ran out with the socket still
    /// writable: the loop must come back by itself.
    Yielded,
}

/// Writing a response the relay produced itself.
pub struct RespondPhase {
    pub stream: Stream,
    out: Vec<u8>,
    sent: usize,
    pub then: Then,
}

impl RespondPhase {
    pub fn new(stream: Stream, out: Vec<u8>, then: Then) -> RespondPhase {
        RespondPhase {
            stream,
            out,
            sent: 0,
            then,
        }
    }

    /// Writes on, at most one turn's bytes; returns how the turn ended and
    /// how many bytes it wrote.
    pub fn write(&mut self) -> Result<(Written, usize), Done> {
        let mut written = 0;
        loop {
            while self.sent < self.out.len() {
                if written >= TURN_BYTES {
                    return Ok((Written::Yielded, written));
                }
                match self.stream.write(&self.out[self.sent..]) {
                    Ok(0) => return Err(Done),
                    Ok(n) => {
                        self.sent += n;
                        written += n;
                    }
                    Err(e) if would_block(&e) => return Ok((Written::Blocked, written)),
                    Err(_) => return Err(Done),
                }
            }
            let Then::SendFile(body) = &mut self.then else {
                break;
            };
            if body.left == 0 {
                break;
            }
            let chunk = BODY_CHUNK.min(usize::try_from(body.left).unwrap_or(BODY_CHUNK));
            self.out.resize(chunk, 0);
            self.sent = 0;
            match body.file.read(&mut self.out) {
                // The file shrank under us: the promised length can't be met.
                Ok(0) | Err(_) => return Err(Done),
                Ok(n) => {
                    self.out.truncate(n);
                    body.left -= n as u64;
                }
            }
        }
        match self.stream.flush() {
            Ok(()) => Ok((Written::All, written)),
            Err(e) if would_block(&e) => Ok((Written::Blocked, written)),
            Err(_) => Err(Done),
        }
    }
}

/// An open WebSocket with the relay's keepalive bookkeeping.
pub struct Socket {
    pub ws: WebSocket<Stream>,
    pub last_heard: Instant,
    pub last_ping: Instant,
    /// When the close frame was queued; the peer has until the close
    /// timeout to answer.
    pub closing: Option<Instant>,
    /// The peer broke the protocol: tungstenite must not read again (its
    /// frame state is past repair), so what arrives is thrown away until
    /// the peer closes or the close timeout passes.
    discarding: bool,
    /// The peer broke the WebSocket protocol (unmasked frame, reserved
    /// bits, bad opcode ...), not yet counted by the relay.
    pub protocol_fault: bool,
}

/// What a read produced.
pub enum Incoming {
    Text(Utf8Bytes),
    /// A frame the protocol does not use (binary).
    Unexpected,
}

impl Socket {
    pub fn new(stream: Stream, rest: Vec<u8>) -> Socket {
        let now = Instant::now();
        Socket {
            ws: WebSocket::from_partially_read(
                stream,
                rest,
                Role::Server,
                Some(websocket_config()),
            ),
            last_heard: now,
            last_ping: now,
            closing: None,
            discarding: false,
            protocol_fault: false,
        }
    }

    /// Reads the frames that have arrived, up to one turn's budget
    /// ([`TURN_FRAMES`], [`TURN_BYTES`]), passing text and unexpected frames
    /// to `each` as they are read, so frames read before a close or the end
    /// of the stream are passed on too. Pings are answered (the pong waits
    /// for the next flush). `Err(Done)` when the connection ended or broke.
    pub fn read(&mut self, mut each: impl FnMut(&mut Socket, Incoming)) -> Result<Turn, Done> {
        if self.discarding {
            return self.discard();
        }
        let (mut frames, mut bytes) = (0, 0);
        while frames < TURN_FRAMES && bytes < TURN_BYTES {
            match self.ws.read() {
                Ok(message) => {
                    self.last_heard = Instant::now();
                    frames += 1;
                    bytes += message.len();
                    match message {
                        Message::Text(text) => each(self, Incoming::Text(text)),
                        Message::Binary(_) => each(self, Incoming::Unexpected),
                        _ => {}
                    }
                }
                Err(tungstenite::Error::Io(e)) if would_block(&e) => return Ok(Turn::Drained),
                Err(tungstenite::Error::Capacity(_)) => {
                    return self.refuse(CloseCode::Size, "frame larger than 64 KiB");
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    return self.refuse(CloseCode::Invalid, "text frame is not UTF-8");
                }
                Err(tungstenite::Error::Protocol(e)) => {
                    self.protocol_fault = true;
                    return self.refuse(CloseCode::Protocol, &e.to_string());
                }
                Err(_) => return Err(Done),
            }
        }
        Ok(Turn::Yielded)
    }

    fn refuse(&mut self, code: CloseCode, reason: &str) -> Result<Turn, Done> {
        self.close(code, reason);
        self.discarding = true;
        self.discard()
    }

    /// Reads and drops raw bytes until `WouldBlock` or one turn's byte
    /// budget; `Err(Done)` at the end of the stream.
    fn discard(&mut self) -> Result<Turn, Done> {
        let mut scratch = [0u8; 4096];
        let mut bytes = 0;
        while bytes < TURN_BYTES {
            match self.ws.get_mut().read(&mut scratch) {
                Ok(0) => return Err(Done),
                Ok(n) => bytes += n,
                Err(e) if would_block(&e) => return Ok(Turn::Drained),
                Err(_) => return Err(Done),
            }
        }
        Ok(Turn::Yielded)
    }

    /// Queues a close frame; the connection lingers until the peer answers
    /// or the close timeout passes.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.closing.is_none() {
            self.closing = Some(Instant::now());
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = self.ws.close(Some(frame));
            let _ = self.ws.flush();
        }
    }

    pub fn ping(&mut self) {
        self.last_ping = Instant::now();
        let _ = self.ws.write(Message::Ping(Default::default()));
    }

    /// Pushes out what tungstenite holds (pongs, pings, frames).
    pub fn flush(&mut self) -> Result<(), Done> {
        match self.ws.flush() {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(e)) if would_block(&e) => Ok(()),
            Err(_) => Err(Done),
        }
    }

    /// Moves messages from `outbox` to the socket until either runs dry;
    /// returns how many messages and bytes went out.
    pub fn pump(&mut self, outbox: &mut Outbox) -> Result<(u64, u64), Done> {
        let (mut messages, mut bytes) = (0, 0);
        if self.closing.is_some() {
            return self.flush().map(|()| (0, 0));
        }
        loop {
            match self.ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if would_block(&e) => return Ok((messages, bytes)),
                Err(_) => return Err(Done),
            }
            let mut batch = 0;
            while batch < WRITE_BATCH {
                let Some(message) = outbox.pop() else { break };
                batch += message.len();
                messages += 1;
                match self.ws.write(Message::Text(message)) {
                    Ok(()) => {}
                    // Buffered by tungstenite; the flush above retries.
                    Err(tungstenite::Error::Io(e)) if would_block(&e) => break,
                    Err(_) => return Err(Done),
                }
            }
            bytes += batch as u64;
            if batch == 0 {
                return Ok((messages, bytes));
            }
        }
    }
}
