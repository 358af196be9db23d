//! Notifications, delivered: webhooks POSTed when a server goes offline,
//! comes back, or holds a threshold ([`super::alerts`] decides when;
//! [`super::notice`] says what each body holds).
//!
//! Delivery runs on threads of its own, one per URL, each with a bounded
//! queue, so a webhook that is slow, unreachable or never answers costs the
//! event loop one mutex push and nothing more.

use super::hush::Hush;
use super::notice::{Deliveries, Event, Notice, Target};
use crate::tls::MaybeTls;
use log::{debug, error, warn};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Deliveries by outcome, for `vstats_relay_notifications_total{result}`;
/// shared by the delivery threads and the loop that renders `/metrics`. A
/// mutex, not atomics: 32-bit MIPS has no 64-bit atomic instructions, and
/// a count taken once per notification costs nothing to lock.
#[derive(Debug, Default)]
pub struct NotifyCounters(Mutex<Deliveries>);

impl NotifyCounters {
    pub fn snapshot(&self) -> Deliveries {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, outcome: impl FnOnce(&mut Deliveries) -> &mut u64) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *outcome(&mut counts) += 1;
    }
}

/// The largest response head read; more is not a webhook answering.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// The longest `Retry-After` obeyed: a server asking for an hour would
/// make every later notice wait behind this one.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Which wait of an attempt ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Connect,
    /// The TLS handshake included.
    Request,
    Response,
}

/// Why one delivery attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// The host name did not resolve (or resolved to nothing).
    Resolve(io::Error),
    /// No address took a connection (refused, unreachable).
    Connect(io::Error),
    /// The attempt's time ran out in this wait.
    TimedOut(Wait),
    /// The connection broke while sending or reading (reset, broken pipe).
    Io(io::Error),
    /// The server closed the connection without a whole response head.
    Closed,
    /// TLS failed for a reason other than the certificate (an alert, a
    /// protocol error): possibly a server being restarted.
    Tls(rustls::Error),
    /// The server's certificate does not verify: retrying will not fix it.
    Certificate(rustls::Error),
    /// A status other than 2xx or 3xx.
    Status {
        code: u16,
        /// `Retry-After` in seconds, on a 429 or 503 only, capped at
        /// [`MAX_RETRY_AFTER`].
        retry_after: Option<Duration>,
    },
    /// A 3xx: not followed, since a webhook that moved wants its new URL
    /// configured; holds the host the `Location` names, if another.
    Redirect { code: u16, to: Option<String> },
    /// The answer does not parse as an HTTP response head.
    NotHttp,
    /// The response head is longer than [`MAX_RESPONSE_HEAD`].
    HeadTooLarge,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Give the notice up: the same request would fail the same way.
    No,
    /// Try again after the backoff.
    Later,
    /// Try again after at least this long (the server's `Retry-After`).
    After(Duration),
}

impl Failure {
    pub fn retry(&self) -> Retry {
        match self {
            Failure::Resolve(_)
            | Failure::Connect(_)
            | Failure::TimedOut(_)
            | Failure::Io(_)
            | Failure::Closed
            | Failure::Tls(_) => Retry::Later,
            Failure::Status {
                retry_after: Some(wait),
                ..
            } => Retry::After(*wait),
            Failure::Status {
                code: 408 | 425 | 429 | 500..=599,
                ..
            } => Retry::Later,
            Failure::Status { .. }
            | Failure::Certificate(_)
            | Failure::Redirect { .. }
            | Failure::NotHttp
            | Failure::HeadTooLarge => Retry::No,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Resolve(e) => write!(f, "cannot resolve the host: {e}"),
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::TimedOut(Wait::Connect) => f.write_str("timed out connecting"),
            Failure::TimedOut(Wait::Request) => f.write_str("timed out sending the request"),
            Failure::TimedOut(Wait::Response) => f.write_str("timed out waiting for the response"),
            Failure::Io(e) => write!(f, "connection lost: {e}"),
            Failure::Closed => f.write_str("the server closed the connection without answering"),
            Failure::Tls(e) => write!(f, "tls: {e}"),
            Failure::Certificate(e) => write!(
                f,
                "certificate not trusted ({e}): use --notify-ca-file for a private CA"
            ),
            Failure::Status { code, .. } => match code {
                401 | 403 | 404 => write!(f, "answered HTTP {code}: check the URL and its token"),
                _ => write!(f, "answered HTTP {code}"),
            },
            Failure::Redirect { code, to } => {
                write!(f, "answered HTTP {code}, a redirect ")?;
                match to {
                    Some(host) => write!(f, "to {host}")?,
                    None => f.write_str("on the same host")?,
                }
                f.write_str(": redirects are not followed; configure the new URL")
            }
            Failure::NotHttp => f.write_str("the answer is not HTTP"),
            Failure::HeadTooLarge => write!(
                f,
                "the response head is longer than {} KiB",
                MAX_RESPONSE_HEAD / 1024
            ),
        }
    }
}

/// One failed attempt, naming its URL only as [`Target::redacted`].
#[derive(Debug)]
pub struct DeliveryError {
    pub target: String,
    pub failure: Failure,
}

impl DeliveryError {
    pub fn retry(&self) -> Retry {
        self.failure.retry()
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.failure)
    }
}

impl std::error::Error for DeliveryError {}

/// What a final response head means: `Ok` with a 2xx status, or why not.
/// 1xx heads are skipped before this is asked.
fn judge(code: u16, retry_after: Option<&[u8]>, location: Option<&[u8]>) -> Result<u16, Failure> {
    match code {
        200..=299 => Ok(code),
        300..=399 => Err(Failure::Redirect {
            code,
            to: location.and_then(location_host),
        }),
        _ => Err(Failure::Status {
            code,
            // Only in seconds: the HTTP-date form falls back to the backoff.
            retry_after: retry_after
                .filter(|_| matches!(code, 429 | 503))
                .and_then(|value| std::str::from_utf8(value).ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_AFTER)),
        }),
    }
}

/// The host a `Location` names, without user information or path (a
/// redirect may carry the secret too); `None` for a relative one.
fn location_host(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let rest = match value.split_once("://") {
        Some((_, rest)) => rest,
        None => value.strip_prefix("//")?,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then(|| host.to_owned())
}

/// The time left before `deadline`, or the wait that ran out.
fn remaining(deadline: Instant, wait: Wait) -> Result<Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Failure::TimedOut(wait))
    } else {
        Ok(left)
    }
}

/// An I/O error of `wait`, sorted: a socket timeout, a certificate that
/// does not verify, another TLS error, or a broken connection.
fn io_failure(e: io::Error, wait: Wait) -> Failure {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return Failure::TimedOut(wait);
    }
    // rustls reports its own errors as InvalidData with the rustls::Error
    // inside.
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls @ rustls::Error::InvalidCertificate(_)) => Failure::Certificate(tls.clone()),
        Some(tls) => Failure::Tls(tls.clone()),
        None if e.kind() == io::ErrorKind::UnexpectedEof => Failure::Closed,
        None => Failure::Io(e),
    }
}

/// One delivery attempt, blocking for at most `timeout` in all (name
/// resolution aside: `getaddrinfo` takes no deadline). Returns the status
/// of a 2xx answer. Only the response head is read.
pub fn post(
    target: &Target,
    content_type: &str,
    body: &[u8],
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<u16, DeliveryError> {
    attempt(target, content_type, body, tls, Instant::now() + timeout).map_err(|failure| {
        DeliveryError {
            target: target.redacted(),
            failure,
        }
    })
}

fn attempt(
    target: &Target,
    content_type: &str,
    body: &[u8],
    tls: &Arc<ClientConfig>,
    deadline: Instant,
) -> Result<u16, Failure> {
    let tcp = connect(target, deadline)?;
    let mut stream = if target.tls() {
        // Fails only on a configuration rustls cannot use, never on input.
        let connection = ClientConnection::new(tls.clone(), target.server_name().clone())
            .map_err(Failure::Tls)?;
        MaybeTls::Tls(Box::new(StreamOwned::new(connection, tcp)))
    } else {
        MaybeTls::Plain(tcp)
    };
    send_request(&mut stream, target, content_type, body, deadline)?;
    read_response(&mut stream, deadline)
}

/// A connection to the first address that takes one, in the resolver's
/// order.
fn connect(target: &Target, deadline: Instant) -> Result<TcpStream, Failure> {
    let addresses: Vec<SocketAddr> = (target.host(), target.port())
        .to_socket_addrs()
        .map_err(Failure::Resolve)?
        .collect();
    let mut failure = Failure::Resolve(io::Error::new(
        io::ErrorKind::NotFound,
        "the name has no address",
    ));
    for (index, address) in addresses.iter().enumerate() {
        // An address that swallows SYNs (a broken IPv6 route, say) must not
        // use up the whole attempt: each gets an equal share of what is left.
        let untried = u32::try_from(addresses.len() - index).unwrap_or(u32::MAX);
        let share = remaining(deadline, Wait::Connect)? / untried;
        match TcpStream::connect_timeout(address, share) {
            Ok(tcp) => return Ok(tcp),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                failure = Failure::TimedOut(Wait::Connect);
            }
            Err(e) => failure = Failure::Connect(e),
        }
    }
    Err(failure)
}

fn send_request(
    stream: &mut MaybeTls<ClientConnection>,
    target: &Target,
    content_type: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<(), Failure> {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vstats-relay/{}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path_and_query(),
        target.host_header(),
        crate::VERSION,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    // The TLS handshake reads as well as writes, all within this step.
    let left = remaining(deadline, Wait::Request)?;
    let tcp = stream.tcp();
    tcp.set_write_timeout(Some(left))
        .and_then(|()| tcp.set_read_timeout(Some(left)))
        .map_err(Failure::Io)?;
    stream
        .write_all(&request)
        .and_then(|()| stream.flush())
        .map_err(|e| io_failure(e, Wait::Request))
}

/// Reads until a final response head has arrived, and judges it.
fn read_response(
    stream: &mut MaybeTls<ClientConnection>,
    deadline: Instant,
) -> Result<u16, Failure> {
    let mut head = vec![0u8; MAX_RESPONSE_HEAD];
    let mut filled = 0;
    loop {
        if filled == head.len() {
            return Err(Failure::HeadTooLarge);
        }
        let left = remaining(deadline, Wait::Response)?;
        stream
            .tcp()
            .set_read_timeout(Some(left))
            .map_err(Failure::Io)?;
        let read = match stream.read(&mut head[filled..]) {
            Ok(0) => return Err(Failure::Closed),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_failure(e, Wait::Response)),
        };
        filled += read;
        // A server may send 1xx heads before the final one, even unasked
        // (RFC 9110, 15.2): each is dropped and parsing starts over.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            let length = match response.parse(&head[..filled]) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return Err(Failure::NotHttp),
            };
            let code = response.code.unwrap_or_default();
            if (100..200).contains(&code) {
                head.copy_within(length..filled, 0);
                filled -= length;
                continue;
            }
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            };
            return judge(code, header("retry-after"), header("location"));
        }
    }
}

/// The first wait before a retry; it doubles per failed attempt...
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// ...up to this.
pub const LONGEST_RETRY: Duration = Duration::from_secs(60);
/// A notice still undelivered this long after it was queued is given up:
/// an `offline` ten minutes late is news no longer.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// The time one delivery attempt may take, connecting included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Notices waiting per URL; past it, the oldest is dropped.
pub const QUEUE_LIMIT: usize = 64;
/// The delivery threads do blocking I/O and one TLS handshake at a time.
const WORKER_STACK: usize = 256 * 1024;

/// The wait before retry number `attempt + 1`: 1 s, 2 s, 4 s, ... 60 s.
#[cfg(test)]
pub fn backoff(attempt: u32) -> Duration {
    doubling(FIRST_RETRY, attempt)
}

fn doubling(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1u32 << attempt.min(16))
        .min(LONGEST_RETRY)
}

/// Whether a notice queued `waited` ago is given up rather than retried
/// after `wait` more: once [`GIVE_UP_AFTER`] has passed, or would have by
/// the end of the wait.
#[cfg(test)]
pub fn give_up(waited: Duration, wait: Duration) -> bool {
    gives_up_after(GIVE_UP_AFTER, waited, wait)
}

fn gives_up_after(limit: Duration, waited: Duration, wait: Duration) -> bool {
    waited >= limit || waited.saturating_add(wait) > limit
}

/// The delivery timing: the constants above in production; shorter in
/// tests, which would otherwise sleep for seconds.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first_retry: Duration,
    give_up_after: Duration,
    attempt_timeout: Duration,
}

impl Schedule {
    const PRODUCTION: Schedule = Schedule {
        first_retry: FIRST_RETRY,
        give_up_after: GIVE_UP_AFTER,
        attempt_timeout: ATTEMPT_TIMEOUT,
    };

    /// The wait before the next attempt, or `None` to give the notice up.
    /// A `Retry-After` is obeyed, but never below the backoff: a server
    /// answering `Retry-After: 0` to every attempt would otherwise be
    /// hammered.
    fn next_wait(&self, attempt: u32, retry: Retry, waited: Duration) -> Option<Duration> {
        let backoff = doubling(self.first_retry, attempt);
        let wait = match retry {
            Retry::No => return None,
            Retry::Later => backoff,
            Retry::After(asked) => asked.max(backoff),
        };
        (!gives_up_after(self.give_up_after, waited, wait)).then_some(wait)
    }
}

/// A notice rendered for one URL, waiting for its turn.
#[derive(Debug, Clone, PartialEq)]
struct Queued {
    event: Event,
    /// The server's name, for log lines.
    server: String,
    content_type: &'static str,
    body: Vec<u8>,
    queued_at: Instant,
}

/// A FIFO of at most `limit` notices that, when full, makes room by
/// dropping the oldest: the newest says most about the present.
#[derive(Debug)]
struct Backlog {
    items: VecDeque<Queued>,
    limit: usize,
}

impl Backlog {
    fn new(limit: usize) -> Backlog {
        Backlog {
            items: VecDeque::new(),
            limit,
        }
    }

    /// Queues `item`; returns the notice dropped to make room, if any.
    fn push(&mut self, item: Queued) -> Option<Queued> {
        let dropped = if self.items.len() >= self.limit {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    fn pop(&mut self) -> Option<Queued> {
        self.items.pop_front()
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// One URL's queue and the state its delivery thread shares with
/// [`Notifier::send`] and [`Notifier::finish`].
struct Lane {
    target: Target,
    state: Mutex<LaneState>,
    /// Signalled on a push, on shutdown, and when the worker exits.
    wake: Condvar,
}

#[derive(Debug)]
struct LaneState {
    backlog: Backlog,
    /// At most one line per [`super::hush::LOG_TROUBLE_EVERY`] about a
    /// full queue, per URL.
    drops: Hush,
    /// Set by shutdown: the worker sends what it can until then.
    stop_at: Option<Instant>,
    /// The worker holds a notice it has not delivered or given up yet.
    in_flight: bool,
    exited: bool,
}

impl Lane {
    fn new(target: Target) -> Lane {
        Lane {
            target,
            state: Mutex::new(LaneState {
                backlog: Backlog::new(QUEUE_LIMIT),
                drops: Hush::default(),
                stop_at: None,
                in_flight: false,
                exited: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// The lock, even if a worker panicked holding it: the queue is still
    /// consistent (every change is one call), and the event loop must not
    /// panic for a notification.
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next notice to deliver, waiting for one; `None` once shutdown
    /// has come and the queue is empty or the grace is over.
    fn next(&self) -> Option<Queued> {
        let mut state = self.lock();
        loop {
            if let Some(stop_at) = state.stop_at
                && Instant::now() >= stop_at
            {
                return None;
            }
            if let Some(item) = state.backlog.pop() {
                state.in_flight = true;
                return Some(item);
            }
            if state.stop_at.is_some() {
                return None;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The in-flight notice is delivered or given up.
    fn done(&self) {
        self.lock().in_flight = false;
    }

    /// Waits `wait` before a retry; false if shutdown cuts it short (the
    /// retry would come after the grace).
    fn sleep(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            if state.stop_at.is_some_and(|stop_at| stop_at <= until) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            state = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn exit(&self) {
        self.lock().exited = true;
        self.wake.notify_all();
    }

    /// Asks the worker to stop by `stop_at`; an earlier request stands.
    fn stop(&self, stop_at: Instant) {
        let mut state = self.lock();
        state.stop_at.get_or_insert(stop_at);
        drop(state);
        self.wake.notify_all();
    }
}

/// The delivery threads, one per URL. Dropping it stops them at once;
/// [`Notifier::finish`] gives them time to empty their queues first.
pub struct Notifier {
    lanes: Vec<Arc<Lane>>,
    workers: Vec<Option<JoinHandle<()>>>,
    counters: Arc<NotifyCounters>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.lanes.iter().map(|lane| lane.target.redacted()))
            .finish()
    }
}

impl Notifier {
    /// One thread per target (`notify-0`, `notify-1`, ...); none without
    /// targets. A thread that cannot be started is logged, and its URL
    /// gets nothing.
    pub fn start(targets: Vec<Target>, tls: Arc<ClientConfig>) -> Notifier {
        let counters = Arc::default();
        Notifier::start_with(targets, tls, counters, Schedule::PRODUCTION)
    }

    /// What the delivery threads have counted so far.
    pub fn deliveries(&self) -> Deliveries {
        self.counters.snapshot()
    }

    fn start_with(
        targets: Vec<Target>,
        tls: Arc<ClientConfig>,
        counters: Arc<NotifyCounters>,
        schedule: Schedule,
    ) -> Notifier {
        let mut notifier = Notifier {
            lanes: Vec::new(),
            workers: Vec::new(),
            counters,
        };
        for (index, target) in targets.into_iter().enumerate() {
            let lane = Arc::new(Lane::new(target));
            let (worker_lane, tls, counters) =
                (lane.clone(), tls.clone(), notifier.counters.clone());
            let spawned = thread::Builder::new()
                .name(format!("notify-{index}"))
                .stack_size(WORKER_STACK)
                .spawn(move || deliver_all(&worker_lane, &tls, &counters, schedule));
            match spawned {
                Ok(handle) => {
                    notifier.lanes.push(lane);
                    notifier.workers.push(Some(handle));
                }
                Err(e) => error!(
                    "notifications to {}: cannot start a thread: {e}; none will be sent there",
                    lane.target.redacted()
                ),
            }
        }
        notifier
    }

    /// Queues `notice` for every URL and returns: never waits on the
    /// network, and holds each queue's lock only to push.
    pub fn send(&self, notice: &Notice) {
        let now = Instant::now();
        for lane in &self.lanes {
            let (content_type, body) = lane.target.body(notice);
            let item = Queued {
                event: notice.event,
                server: if notice.server_name.is_empty() {
                    notice.server_id.clone()
                } else {
                    notice.server_name.clone()
                },
                content_type,
                body,
                queued_at: now,
            };
            let mut state = lane.lock();
            let report = match state.backlog.push(item) {
                Some(_) => {
                    self.counters.count(|d| &mut d.dropped);
                    // Hush counts the drops held back before this one; the
                    // line counts this one too.
                    state.drops.pass(now).map(|held| held + 1)
                }
                None => None,
            };
            drop(state);
            lane.wake.notify_all();
            if let Some(dropped) = report {
                warn!(
                    "notifications to {}: queue full ({QUEUE_LIMIT}); dropped the oldest \
                     ({dropped} since the last such line)",
                    lane.target.redacted()
                );
            }
        }
    }

    /// At shutdown: lets the threads send what is queued for up to `grace`,
    /// then returns, leaving behind any thread still in a network call.
    pub fn finish(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for lane in &self.lanes {
            lane.stop(deadline);
        }
        let mut unsent = 0;
        for (lane, worker) in self.lanes.iter().zip(&mut self.workers) {
            let mut state = lane.lock();
            while !state.exited {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = lane
                    .wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            unsent += state.backlog.len() + usize::from(state.in_flight);
            if state.exited {
                drop(state);
                if let Some(handle) = worker.take() {
                    let _ = handle.join();
                }
            }
        }
        if unsent > 0 {
            warn!("notifications: {unsent} left unsent at shutdown");
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // After finish this changes nothing; otherwise the threads stop now
        // rather than wait on an empty queue for ever.
        let now = Instant::now();
        for lane in &self.lanes {
            lane.stop(now);
        }
    }
}

/// A delivery thread: one notice at a time, in order, each retried until
/// delivered or given up before the next is tried, so that an `online`
/// never arrives before its `offline`.
fn deliver_all(
    lane: &Lane,
    tls: &Arc<ClientConfig>,
    counters: &NotifyCounters,
    schedule: Schedule,
) {
    while let Some(item) = lane.next() {
        let finished = deliver(lane, &item, tls, counters, schedule);
        if !finished {
            break; // shutdown came first: the notice stays in flight, unsent
        }
        lane.done();
    }
    lane.exit();
}

/// Attempts `item` until it is delivered or given up (true), or shutdown
/// interrupts a wait (false). A retry is logged at each failed attempt:
/// the backoff already spaces them, to one a minute after the first few.
fn deliver(
    lane: &Lane,
    item: &Queued,
    tls: &Arc<ClientConfig>,
    counters: &NotifyCounters,
    schedule: Schedule,
) -> bool {
    let target = &lane.target;
    let (event, server) = (item.event.as_str(), &item.server);
    let mut attempt = 0;
    loop {
        let error = match post(
            target,
            item.content_type,
            &item.body,
            tls,
            schedule.attempt_timeout,
        ) {
            Ok(status) => {
                counters.count(|d| &mut d.sent);
                debug!(
                    "notification {event} for {server} sent to {}: {status}",
                    target.redacted()
                );
                return true;
            }
            Err(error) => error,
        };
        let waited = item.queued_at.elapsed();
        let retry = error.retry();
        let Some(wait) = schedule.next_wait(attempt, retry, waited) else {
            counters.count(|d| &mut d.failed);
            if retry == Retry::No {
                warn!("notification {event} for {server} not sent: {error}");
            } else {
                warn!(
                    "notification {event} for {server} given up after {} and {} attempt(s): {error}",
                    humantime::format_duration(Duration::from_secs(waited.as_secs())),
                    attempt + 1
                );
            }
            return true;
        };
        warn!(
            "notification {event} for {server} not sent yet: {error}; retrying in {}",
            humantime::format_duration(wait)
        );
        if !lane.sleep(wait) {
            return false;
        }
        attempt += 1;
    }
}

/// `vstats-relay notify test`: one test notice to each URL, no retries,
/// one line per URL on `out`. Returns the exit code: 0 if all were
/// accepted, 1 if any failed, 2 without URLs.
pub fn test_command(targets: &[Target], ca_file: Option<&Path>, out: &mut dyn Write) -> u8 {
    if targets.is_empty() {
        let _ = writeln!(
            out,
            "no --notify-url configured (flag or VSTATS_NOTIFY_URL)"
        );
        return 2;
    }
    let tls = match crate::tls::client_config(ca_file) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            let _ = writeln!(out, "{e}");
            return 1;
        }
    };
    let host = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "this host".to_owned());
    let notice = Notice {
        event: Event::Test,
        server_id: "test".to_owned(),
        server_name: host.clone(),
        server_location: String::new(),
        at: SystemTime::now(),
        message: format!(
            "Test notification from vstats-relay on {host}: notifications reach this URL."
        ),
        rule: None,
        value: None,
        resolved: false,
    };
    let mut all_ok = true;
    for target in targets {
        let (content_type, body) = target.body(&notice);
        let started = Instant::now();
        let line = match post(target, content_type, &body, &tls, ATTEMPT_TIMEOUT) {
            Ok(status) => format!(
                "ok    {} {status} in {} ms",
                target.redacted(),
                started.elapsed().as_millis()
            ),
            Err(e) => {
                all_ok = false;
                format!("FAIL  {} {}", e.target, e.failure)
            }
        };
        let _ = writeln!(out, "{line}");
    }
    if all_ok { 0 } else { 1 }
}

#[cfg(test)]
#[path = "../../tests/common/test_ca.rs"]
mod test_ca;

#[cfg(test)]
mod tests {
    use super::test_ca::TestCa;
    use super::*;
    use crate::relay::notice::tests::{json, notice, target};
    use rustls::ServerConnection;
    use std::net::TcpListener;

    #[test]
    fn statuses_are_judged() {
        let retry = |code: u16, retry_after: Option<&str>| match judge(
            code,
            retry_after.map(str::as_bytes),
            None,
        ) {
            Ok(_) => None,
            Err(failure) => Some(failure.retry()),
        };
        assert_eq!(judge(204, None, None).unwrap(), 204);
        assert_eq!(retry(200, None), None);
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(retry(code, None), Some(Retry::Later), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(retry(code, None), Some(Retry::No), "{code}");
        }
        assert_eq!(
            retry(429, Some(" 7 ")),
            Some(Retry::After(Duration::from_secs(7)))
        );
        assert_eq!(
            retry(503, Some("86400")),
            Some(Retry::After(MAX_RETRY_AFTER))
        );
        assert_eq!(
            retry(500, Some("7")),
            Some(Retry::Later),
            "only 429 and 503"
        );
        assert_eq!(
            retry(503, Some("Wed, 21 Oct 2026 07:28:00 GMT")),
            Some(Retry::Later)
        );

        let redirect = judge(
            301,
            None,
            Some(b"https://user:pw@new.example:8443/hooks/SECRET?x=1"),
        )
        .unwrap_err();
        assert_eq!(redirect.retry(), Retry::No);
        let message = redirect.to_string();
        assert!(
            message.contains("to new.example:8443") && message.contains("not followed"),
            "{message}"
        );
        assert!(
            !message.contains("SECRET") && !message.contains("pw"),
            "{message}"
        );
        assert!(
            judge(302, None, Some(b"/elsewhere/SECRET"))
                .unwrap_err()
                .to_string()
                .contains("same host")
        );
        assert_eq!(
            location_host(b"//cdn.example/x"),
            Some("cdn.example".to_owned())
        );
    }

    // Real deliveries over loopback from here on.

    /// One request as the test server read it.
    #[derive(Debug)]
    struct Received {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn read_request(stream: &mut dyn Read) -> io::Result<Received> {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buffer.extend_from_slice(&chunk[..read]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(length) = request.parse(&buffer).unwrap() {
                let headers: Vec<(String, String)> = request
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let mut received = Received {
                    method: request.method.unwrap().to_owned(),
                    path: request.path.unwrap().to_owned(),
                    headers,
                    body: buffer[length..].to_vec(),
                };
                let wanted: usize = received.header("content-length").unwrap().parse().unwrap();
                while received.body.len() < wanted {
                    let read = stream.read(&mut chunk)?;
                    if read == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    received.body.extend_from_slice(&chunk[..read]);
                }
                return Ok(received);
            }
        }
    }

    fn answer(code: u16, extra: &str) -> String {
        format!("HTTP/1.1 {code} Whatever\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
    }

    trait Duplex: Read + Write {}
    impl<T: Read + Write> Duplex for T {}

    /// A loopback server: each connection gets the next of `answers`
    /// after its request is read; returns the requests read (a connection
    /// whose request could not be read, as when TLS fails, counts as
    /// served but reads nothing).
    fn serve(
        answers: Vec<String>,
        wrap: impl Fn(TcpStream) -> Box<dyn Duplex> + Send + 'static,
    ) -> (u16, thread::JoinHandle<Vec<Received>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let mut received = Vec::new();
            for answer in answers {
                let (tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut stream = wrap(tcp);
                if let Ok(request) = read_request(&mut stream) {
                    received.push(request);
                    let _ = stream.write_all(answer.as_bytes());
                    let _ = stream.flush();
                }
            }
            received
        });
        (port, server)
    }

    fn plain(tcp: TcpStream) -> Box<dyn Duplex> {
        Box::new(tcp)
    }

    fn no_tls() -> Arc<ClientConfig> {
        Arc::new(crate::tls::client_config(None).unwrap())
    }

    #[test]
    fn a_post_carries_the_headers_and_body_and_returns_the_status() {
        let (port, server) = serve(vec![answer(204, "")], plain);
        let t = Target::parse(
            &format!("http://127.0.0.1:{port}/hook/SECRET?x=1#frag"),
            Some("{{message}}"),
        )
        .unwrap();
        let (content_type, body) = t.body(&notice(Event::Offline));
        let status = post(&t, content_type, &body, &no_tls(), Duration::from_secs(5)).unwrap();
        assert_eq!(status, 204);
        let requests = server.join().unwrap();
        let request = &requests[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/hook/SECRET?x=1")
        );
        assert_eq!(
            request.header("host"),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        assert_eq!(
            request.header("user-agent"),
            Some(format!("vstats-relay/{}", crate::VERSION).as_str())
        );
        assert_eq!(
            request.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(request.header("content-length"), Some("16"));
        assert_eq!(request.header("connection"), Some("close"));
        assert_eq!(request.body, b"Web 1 is offline");
    }

    fn post_to(port: u16, timeout: Duration) -> Result<u16, DeliveryError> {
        let t = target(&format!("http://127.0.0.1:{port}/hook"));
        post(&t, "application/json", b"{}", &no_tls(), timeout)
    }

    #[test]
    fn answers_are_classified() {
        let (port, server) = serve(
            vec![
                answer(503, "Retry-After: 7\r\n"),
                answer(404, ""),
                answer(301, "Location: https://elsewhere.example/hook\r\n"),
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    .to_owned(),
                "SSH-2.0-OpenSSH_9.6\r\n".to_owned(),
                String::new(),
            ],
            plain,
        );
        let timeout = Duration::from_secs(5);
        let error = post_to(port, timeout).unwrap_err();
        assert_eq!(error.retry(), Retry::After(Duration::from_secs(7)));
        assert_eq!(
            error.to_string(),
            format!("http://127.0.0.1:{port}/…: answered HTTP 503")
        );
        let error = post_to(port, timeout).unwrap_err();
        assert_eq!(error.retry(), Retry::No);
        assert!(error.to_string().contains("404"), "{error}");
        let error = post_to(port, timeout).unwrap_err();
        assert_eq!(error.retry(), Retry::No);
        assert!(error.to_string().contains("elsewhere.example"), "{error}");
        assert_eq!(
            post_to(port, timeout).unwrap(),
            200,
            "a 100 first is skipped"
        );
        let error = post_to(port, timeout).unwrap_err();
        assert!(matches!(error.failure, Failure::NotHttp), "{error}");
        assert_eq!(error.retry(), Retry::No);
        let error = post_to(port, timeout).unwrap_err();
        assert!(matches!(error.failure, Failure::Closed), "{error:?}");
        assert_eq!(error.retry(), Retry::Later);
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_never_answers_times_out_in_time() {
        // The kernel completes connections a listener has not accepted, so
        // the request is sent and the answer never comes.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let started = Instant::now();
        let error = post_to(port, Duration::from_secs(1)).unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(error.failure, Failure::TimedOut(Wait::Response)),
            "{error:?}"
        );
        assert_eq!(error.retry(), Retry::Later);
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        drop(listener);
    }

    #[test]
    fn a_closed_port_is_a_connection_error_to_retry() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = post_to(port, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(error.failure, Failure::Connect(_)), "{error:?}");
        assert_eq!(error.retry(), Retry::Later);
        assert!(
            error
                .to_string()
                .starts_with(&format!("http://127.0.0.1:{port}/…: cannot connect")),
            "{error}"
        );
    }

    /// Wraps each accepted connection in a TLS server with `ca`'s certificate.
    fn tls_wrap(ca: &TestCa) -> impl Fn(TcpStream) -> Box<dyn Duplex> + Send + 'static {
        let config = Arc::new(crate::tls::server_config(&ca.cert_pem, &ca.key_pem).unwrap());
        move |tcp| {
            let connection = ServerConnection::new(config.clone()).unwrap();
            Box::new(StreamOwned::new(connection, tcp))
        }
    }

    #[test]
    fn https_delivers_with_the_ca_and_refuses_an_untrusted_certificate() {
        let ca = TestCa::new();
        let (port, server) = serve(vec![answer(200, ""), answer(200, "")], tls_wrap(&ca));
        let t = target(&format!("https://127.0.0.1:{port}/hook"));
        let trusting = Arc::new(crate::tls::client_config(Some(&ca.ca_pem)).unwrap());
        let timeout = Duration::from_secs(5);
        assert_eq!(
            post(&t, "application/json", b"{}", &trusting, timeout).unwrap(),
            200
        );

        let error = post(&t, "application/json", b"{}", &no_tls(), timeout).unwrap_err();
        assert!(
            matches!(error.failure, Failure::Certificate(_)),
            "{error:?}"
        );
        assert_eq!(error.retry(), Retry::No);
        assert!(
            error.to_string().contains("certificate not trusted")
                && error.to_string().contains("--notify-ca-file"),
            "{error}"
        );
        let requests = server.join().unwrap();
        assert_eq!(requests.len(), 1, "the untrusted attempt sent no request");
        assert_eq!(
            requests[0].header("host"),
            Some(format!("127.0.0.1:{port}").as_str())
        );
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_gives_up_at_ten() {
        let waits: Vec<u64> = (0..9).map(|attempt| backoff(attempt).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), LONGEST_RETRY);
        let secs = Duration::from_secs;
        assert!(!give_up(secs(0), secs(1)));
        assert!(!give_up(secs(540), secs(60)), "ends exactly at ten minutes");
        assert!(give_up(secs(541), secs(60)), "would end past ten minutes");
        assert!(give_up(secs(600), Duration::ZERO));
        assert!(give_up(secs(700), secs(1)));

        let schedule = Schedule::PRODUCTION;
        assert_eq!(schedule.next_wait(0, Retry::Later, secs(0)), Some(secs(1)));
        assert_eq!(
            schedule.next_wait(3, Retry::After(secs(7)), secs(0)),
            Some(secs(8))
        );
        assert_eq!(
            schedule.next_wait(0, Retry::After(secs(7)), secs(0)),
            Some(secs(7))
        );
        assert_eq!(
            schedule.next_wait(0, Retry::After(secs(300)), secs(301)),
            None
        );
        assert_eq!(schedule.next_wait(0, Retry::No, secs(0)), None);
    }

    fn queued(n: u8) -> Queued {
        Queued {
            event: Event::Offline,
            server: format!("server {n}"),
            content_type: "application/json",
            body: vec![n],
            queued_at: Instant::now(),
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let mut backlog = Backlog::new(3);
        let dropped: Vec<Option<u8>> = (0..5)
            .map(|n| backlog.push(queued(n)).map(|item| item.body[0]))
            .collect();
        assert_eq!(dropped, [None, None, None, Some(0), Some(1)]);
        let left: Vec<u8> = std::iter::from_fn(|| backlog.pop())
            .map(|item| item.body[0])
            .collect();
        assert_eq!(left, [2, 3, 4]);
    }

    /// Retries after 10 ms rather than 1 s.
    fn quick() -> Schedule {
        Schedule {
            first_retry: Duration::from_millis(10),
            give_up_after: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A notifier of one URL on the quick schedule, and its counters.
    fn quick_notifier(url: &str, tls: Arc<ClientConfig>) -> (Notifier, Arc<NotifyCounters>) {
        let counters = Arc::new(NotifyCounters::default());
        let notifier = Notifier::start_with(vec![target(url)], tls, counters.clone(), quick());
        (notifier, counters)
    }

    #[test]
    fn the_notifier_retries_a_notice_until_it_arrives_once() {
        let (port, server) = serve(
            vec![answer(503, ""), answer(503, ""), answer(204, "")],
            plain,
        );
        let (notifier, counters) =
            quick_notifier(&format!("http://127.0.0.1:{port}/hook"), no_tls());
        notifier.send(&notice(Event::Offline));
        wait_for("sent", || counters.snapshot().sent == 1);
        notifier.finish(Duration::from_secs(1));
        let requests = server.join().unwrap();
        assert_eq!(requests.len(), 3);
        assert!(requests.iter().all(|r| json(&r.body)["event"] == "offline"));
        assert_eq!(
            counters.snapshot(),
            Deliveries {
                sent: 1,
                failed: 0,
                dropped: 0
            }
        );
    }

    #[test]
    fn the_notifier_keeps_order_while_retrying() {
        let answers = vec![
            answer(503, ""),
            answer(429, ""),
            answer(204, ""),
            answer(204, ""),
        ];
        let (port, server) = serve(answers, plain);
        let (notifier, counters) =
            quick_notifier(&format!("http://127.0.0.1:{port}/hook"), no_tls());
        notifier.send(&notice(Event::Offline));
        notifier.send(&notice(Event::Online));
        wait_for("both sent", || counters.snapshot().sent == 2);
        notifier.finish(Duration::from_secs(1));
        let events: Vec<String> = server
            .join()
            .unwrap()
            .iter()
            .map(|r| json(&r.body)["event"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(events, ["offline", "offline", "offline", "online"]);
    }

    #[test]
    fn the_notifier_gives_up_on_a_refusal_and_delivers_over_https() {
        let ca = TestCa::new();
        let (port, server) = serve(vec![answer(400, ""), answer(201, "")], tls_wrap(&ca));
        let tls = Arc::new(crate::tls::client_config(Some(&ca.ca_pem)).unwrap());
        // The worker's own small stack runs the TLS handshake here.
        let (notifier, counters) = quick_notifier(&format!("https://localhost:{port}/hook"), tls);
        notifier.send(&notice(Event::Offline));
        notifier.send(&notice(Event::Online));
        wait_for("one refused, one sent", || counters.snapshot().sent == 1);
        notifier.finish(Duration::from_secs(1));
        assert_eq!(server.join().unwrap().len(), 2);
        assert_eq!(
            counters.snapshot(),
            Deliveries {
                sent: 1,
                failed: 1,
                dropped: 0
            }
        );
    }

    #[test]
    fn finish_returns_after_the_grace_despite_a_stuck_delivery() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (notifier, counters) =
            quick_notifier(&format!("http://127.0.0.1:{port}/hook"), no_tls());
        for _ in 0..3 {
            notifier.send(&notice(Event::Offline));
        }
        let started = Instant::now();
        notifier.finish(Duration::from_millis(200));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(1),
            "{took:?}"
        );
        assert_eq!(counters.snapshot(), Deliveries::default());
    }

    #[test]
    fn a_retry_wait_past_the_grace_ends_the_worker_at_once() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let schedule = Schedule {
            first_retry: Duration::from_secs(30),
            give_up_after: Duration::from_secs(120),
            ..quick()
        };
        let notifier = Notifier::start_with(
            vec![target(&format!("http://127.0.0.1:{port}/hook"))],
            no_tls(),
            Arc::default(),
            schedule,
        );
        notifier.send(&notice(Event::Offline));
        let lane = notifier.lanes[0].clone();
        wait_for("the first attempt failed", || lane.lock().in_flight);
        thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        notifier.finish(Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(lane.lock().exited);
    }

    #[test]
    fn a_full_queue_is_counted() {
        // No thread drains this lane: the notifier has none started.
        let lane = Arc::new(Lane::new(target("http://127.0.0.1:9/hook")));
        let counters = Arc::new(NotifyCounters::default());
        let notifier = Notifier {
            lanes: vec![lane.clone()],
            workers: vec![None],
            counters: counters.clone(),
        };
        for _ in 0..QUEUE_LIMIT + 5 {
            notifier.send(&notice(Event::Offline));
        }
        assert_eq!(counters.snapshot().dropped, 5);
        assert_eq!(lane.lock().backlog.len(), QUEUE_LIMIT);
    }

    #[test]
    fn notify_test_prints_a_line_per_url() {
        let mut out = Vec::new();
        assert_eq!(test_command(&[], None, &mut out), 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "no --notify-url configured (flag or VSTATS_NOTIFY_URL)\n"
        );

        let (port, server) = serve(vec![answer(204, "")], plain);
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let targets = [
            target(&format!("http://127.0.0.1:{port}/SECRET")),
            target(&format!("http://127.0.0.1:{closed}/SECRET")),
        ];
        let mut out = Vec::new();
        assert_eq!(test_command(&targets, None, &mut out), 1);
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with(&format!("ok    http://127.0.0.1:{port}/… 204 in ")),
            "{out}"
        );
        assert!(lines[0].ends_with(" ms"), "{out}");
        assert!(
            lines[1].starts_with(&format!("FAIL  http://127.0.0.1:{closed}/… cannot connect")),
            "{out}"
        );
        assert!(!out.contains("SECRET"));
        let request = &server.join().unwrap()[0];
        let body = json(&request.body);
        assert_eq!(
            (body["event"].as_str(), body["server"]["id"].as_str()),
            (Some("test"), Some("test"))
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Test notification from vstats-relay on ")
        );

        let mut out = Vec::new();
        assert_eq!(
            test_command(&targets, Some(Path::new("/nonexistent/ca.pem")), &mut out),
            1
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("/nonexistent/ca.pem")
        );
    }
}
