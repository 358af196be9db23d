//! The history database: SQLite in WAL mode, beside the state file
//! (`NAME.db`). One thread writes and one reads, each with its own
//! connection, so that the event loop never waits for a disk: it hands
//! [`Job`]s and [`Ask`]s over through bounded queues and takes [`Answer`]s
//! back when the eventfd says they are ready. `docs/HISTORY-DB.md` gives
//! the schema.
//!
//! Faults are kept from the loop too. A full disk or a locked database
//! keeps the minutes queued (the oldest dropped past [`QUEUE_ROWS`]) and
//! tries again every [`RETRY_EVERY`], with one log line a minute; a
//! corrupt file is renamed aside and a fresh one started.

use super::history::{GAP, History, POINT_BYTES, Point, SERIES, point_of};
use super::rollup::{self, Answer, Ask, DAY_SECS, Job, Retention, Row, Step, Tier};
use super::shared::{StoreCounts, unix_seconds};
use log::{debug, info, warn};
use nix::sys::eventfd::{EfdFlags, EventFd};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Minutes that may wait for the disk: an hour of 1,000 servers, ten
/// minutes of 6,500 (about 100 bytes each in memory).
pub const QUEUE_ROWS: usize = 65_536;
/// Reads that may wait; a request beyond them gets `503`.
pub const QUEUE_ASKS: usize = 64;
/// SQLite's page cache, for each of the two connections.
pub const CACHE_KIB: u32 = 2048;
/// How soon a failed write is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);
/// One log line per kind of trouble this often.
const TROUBLE_LOG_EVERY: Duration = Duration::from_secs(60);
/// How often rows past their tier's retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// A quarter, hour or day is rolled up this long after it ends, when its
/// last minute has surely been written.
const ROLLUP_GRACE: u64 = 30;
/// Servers a transaction of an import holds (about 1,500 minutes each).
const IMPORT_CHUNK: usize = 100;
/// How long a write waits for a lock another process holds (a user's
/// `sqlite3` in a transaction) before it is tried again later.
const BUSY_WAIT: Duration = Duration::from_secs(2);
/// The niceness of the database's threads: when the relay's core is busy
/// (twenty clients reading years on a one-core box), its event loop runs
/// first, and the threads take what it leaves.
const NICENESS: i32 = 10;
/// `PRAGMA application_id`: "vsta", so `file(1)` and tools can tell.
const APPLICATION_ID: i32 = 0x7673_7461;
const SCHEMA_VERSION: i32 = 1;

/// Where the database goes: beside the state file, `NAME.db` for
/// `NAME.json`.
pub fn file_beside(state: &Path) -> PathBuf {
    state.with_extension("db")
}

/// The writes waiting, and how many minutes they hold.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    rows: usize,
    stop: bool,
}

impl Queue {
    /// Queues a job; past [`QUEUE_ROWS`], the oldest batches of minutes
    /// go first. Returns the rows dropped.
    fn push(&mut self, job: Job) -> usize {
        self.rows += rows_of(&job);
        self.jobs.push_back(job);
        let mut dropped = 0;
        while self.rows > QUEUE_ROWS {
            let Some(oldest) = self
                .jobs
                .iter()
                .position(|job| matches!(job, Job::Minutes(_)))
            else {
                break;
            };
            if let Some(Job::Minutes(rows)) = self.jobs.remove(oldest) {
                self.rows -= rows.len();
                dropped += rows.len();
            }
        }
        dropped
    }

    /// Puts back jobs that failed, ahead of those queued since.
    fn put_back(&mut self, jobs: Vec<Job>) -> usize {
        let queued = std::mem::take(&mut self.jobs);
        self.rows = 0;
        let mut dropped = 0;
        for job in jobs.into_iter().chain(queued) {
            dropped += self.push(job);
        }
        dropped
    }

    fn take(&mut self) -> Vec<Job> {
        self.rows = 0;
        self.jobs.drain(..).collect()
    }
}

fn rows_of(job: &Job) -> usize {
    match job {
        Job::Minutes(rows) => rows.len(),
        _ => 0,
    }
}

#[derive(Default)]
struct Asks {
    waiting: VecDeque<Ask>,
    stop: bool,
}

/// What the loop and the two threads share.
struct Shared {
    path: PathBuf,
    retention: Retention,
    queue: Mutex<Queue>,
    queued: Condvar,
    asks: Mutex<Asks>,
    asked: Condvar,
    answers: Mutex<Vec<Answer>>,
    /// Written once an answer is ready: the loop polls it.
    ready: EventFd,
    /// Plain counts behind a lock: MIPS32 has no 64-bit atomics.
    counts: Mutex<StoreCounts>,
    /// Bumped each time the writer starts a new file (a corrupt one was
    /// put aside): the reader opens the new one.
    generation: AtomicUsize,
    /// The writer has finished its last work (at shutdown).
    done: AtomicBool,
}

impl Shared {
    fn count(&self, change: impl FnOnce(&mut StoreCounts)) {
        change(&mut lock(&self.counts));
    }
}

/// Locks a mutex, even one a panicking thread left poisoned: the queues
/// hold plain data, valid at every step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The database's two threads, and the loop's side of their queues.
pub struct Store {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
}

impl Store {
    /// Starts the threads; the writer opens (or creates) the database at
    /// `path`. Fails only if the eventfd or a thread cannot be made.
    pub fn start(path: PathBuf, retention: Retention) -> std::io::Result<Store> {
        let ready = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        let shared = Arc::new(Shared {
            path,
            retention,
            queue: Mutex::default(),
            queued: Condvar::new(),
            asks: Mutex::default(),
            asked: Condvar::new(),
            answers: Mutex::default(),
            ready,
            counts: Mutex::default(),
            generation: AtomicUsize::new(0),
            done: AtomicBool::new(false),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("history-writer".into())
                .spawn(move || Writer::new(shared).run())?
        };
        let reader = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("history-reader".into())
                .spawn(move || read_loop(&shared))?
        };
        Ok(Store {
            shared,
            writer: Some(writer),
            reader: Some(reader),
        })
    }

    /// The descriptor that turns readable when answers are ready.
    pub fn ready_fd(&self) -> impl AsFd + '_ {
        self.shared.ready.as_fd()
    }

    /// Queues a write; never waits for the disk.
    pub fn send(&self, job: Job) {
        let mut queue = lock(&self.shared.queue);
        let dropped = queue.push(job);
        self.shared
            .count(|counts| counts.rows_queued = queue.rows as u64);
        drop(queue);
        if dropped > 0 {
            self.shared
                .count(|counts| counts.rows_dropped += dropped as u64);
        }
        self.shared.queued.notify_one();
    }

    /// Queues a read, or hands it back if [`QUEUE_ASKS`] are waiting.
    pub fn ask(&self, ask: Ask) -> Result<(), Ask> {
        let mut asks = lock(&self.shared.asks);
        if asks.waiting.len() >= QUEUE_ASKS {
            return Err(ask);
        }
        asks.waiting.push_back(ask);
        drop(asks);
        self.shared.asked.notify_one();
        Ok(())
    }

    /// The answers ready, in the order they were made.
    pub fn answers(&self) -> Vec<Answer> {
        let _ = self.shared.ready.read();
        std::mem::take(&mut *lock(&self.shared.answers))
    }

    pub fn counts(&self) -> StoreCounts {
        *lock(&self.shared.counts)
    }

    /// Writes what is queued and rolls up what is open, waiting at most
    /// `grace`; then stops both threads.
    pub fn finish(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        // The reader first: its connection closed, the writer's is the last,
        // and closing it folds the WAL back into the file.
        lock(&self.shared.asks).stop = true;
        self.shared.asked.notify_all();
        if let Some(reader) = self.reader.take() {
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        lock(&self.shared.queue).stop = true;
        self.shared.queued.notify_all();
        while !self.shared.done.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        match self.writer.take() {
            // Done: it is returning.
            Some(writer) if self.shared.done.load(Ordering::Acquire) => {
                let _ = writer.join();
            }
            Some(_) => warn!(
                "history: {} minutes not yet written after {grace:?}; leaving them",
                lock(&self.shared.queue).rows
            ),
            None => {}
        }
    }
}

/// Why a write failed, as it decides what happens next.
enum Trouble {
    /// The file is not a database, or is damaged: put aside, start again.
    Corrupt(rusqlite::Error),
    /// Anything else (a full disk, a lock held too long, an I/O error):
    /// the jobs wait and are tried again.
    Retry(rusqlite::Error),
}

impl From<rusqlite::Error> for Trouble {
    fn from(e: rusqlite::Error) -> Trouble {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Trouble::Corrupt(e),
            _ => Trouble::Retry(e),
        }
    }
}

/// A coarser step that the minutes of a server are rolled up into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Coarse {
    Quarter,
    Hour,
    /// The day's traffic, from its hours: after them.
    Day,
}

impl Coarse {
    fn secs(self) -> u64 {
        match self {
            Coarse::Quarter => Tier::Quarters.step_secs(),
            Coarse::Hour => Tier::Hours.step_secs(),
            Coarse::Day => DAY_SECS,
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    db: Option<Connection>,
    /// Server names to their row ids.
    ids: HashMap<String, i64>,
    /// Coarse steps with new minutes, to roll up once over.
    pending: BTreeMap<(Coarse, u64), BTreeSet<i64>>,
    last_prune: Option<Instant>,
    /// When each kind of trouble was last logged.
    logged: HashMap<&'static str, Instant>,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Writer {
        Writer {
            shared,
            db: None,
            ids: HashMap::new(),
            pending: BTreeMap::new(),
            last_prune: None,
            logged: HashMap::new(),
        }
    }

    fn run(mut self) {
        yield_to_the_loop();
        // At once, so that reads are answered before the first write.
        self.open();
        loop {
            let (jobs, stopping) = self.wait_for_work();
            if self.db.is_none() {
                self.open();
            }
            if self.db.is_none() {
                self.requeue(jobs);
                if stopping {
                    break;
                }
                self.pause();
                continue;
            }
            let written = rows_in(&jobs);
            let imported = jobs.iter().try_for_each(|job| match job {
                Job::Import(histories) => self.import(histories),
                _ => Ok(()),
            });
            match imported.and_then(|()| self.apply(&jobs)) {
                Ok(()) => {
                    self.shared
                        .count(|counts| counts.rows_written += written as u64);
                    self.clear_trouble("write");
                }
                Err(trouble) => {
                    self.shared.count(|counts| counts.write_errors += 1);
                    self.requeue(jobs);
                    self.trouble(trouble, "write");
                    if stopping {
                        break;
                    }
                    self.pause();
                    continue;
                }
            }
            let result = self.roll_up(stopping).and_then(|()| self.prune_if_due());
            if let Err(trouble) = result {
                self.trouble(trouble, "roll up");
            }
            self.note_size();
            if stopping && lock(&self.shared.queue).jobs.is_empty() {
                break;
            }
        }
        // Closing the last connection checkpoints the WAL into the file
        // and removes it: a stopped relay leaves one file.
        self.db = None;
        self.shared.done.store(true, Ordering::Release);
    }

    /// The jobs queued, once there are some or a chore is due (within
    /// [`ROLLUP_GRACE`]); and whether the relay is stopping.
    fn wait_for_work(&self) -> (Vec<Job>, bool) {
        let mut queue = lock(&self.shared.queue);
        if queue.jobs.is_empty() && !queue.stop {
            let wait = Duration::from_secs(ROLLUP_GRACE);
            queue = self
                .shared
                .queued
                .wait_timeout(queue, wait)
                .map(|(queue, _)| queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        let jobs = queue.take();
        self.shared.count(|counts| counts.rows_queued = 0);
        (jobs, queue.stop)
    }

    /// Sleeps [`RETRY_EVERY`], or until the relay stops.
    fn pause(&self) {
        let queue = lock(&self.shared.queue);
        if !queue.stop {
            let _ = self
                .shared
                .queued
                .wait_timeout_while(queue, RETRY_EVERY, |q| !q.stop);
        }
    }

    /// Puts jobs that could not be written back in the queue, ahead of
    /// newer ones; what the queue cannot hold is dropped and counted.
    fn requeue(&self, jobs: Vec<Job>) {
        let mut queue = lock(&self.shared.queue);
        let dropped = queue.put_back(jobs);
        let queued = queue.rows as u64;
        drop(queue);
        self.shared.count(|counts| {
            counts.rows_dropped += dropped as u64;
            counts.rows_queued = queued;
        });
    }

    /// Logs a kind of trouble at most once a [`TROUBLE_LOG_EVERY`]; a
    /// corrupt file is put aside at once.
    fn trouble(&mut self, trouble: Trouble, doing: &'static str) {
        match trouble {
            Trouble::Corrupt(e) => {
                warn!("history: {}: {e} ({doing})", self.shared.path.display());
                self.put_aside();
                self.open();
            }
            Trouble::Retry(e) => {
                let now = Instant::now();
                let due = self
                    .logged
                    .get(doing)
                    .is_none_or(|at| now.duration_since(*at) >= TROUBLE_LOG_EVERY);
                if due {
                    self.logged.insert(doing, now);
                    let queued = lock(&self.shared.queue).rows;
                    warn!(
                        "history: cannot {doing} {}: {e}; {queued} minutes wait in memory \
                         (the oldest dropped past {QUEUE_ROWS}), trying again every {}s",
                        self.shared.path.display(),
                        RETRY_EVERY.as_secs()
                    );
                }
            }
        }
    }

    fn clear_trouble(&mut self, doing: &'static str) {
        if self.logged.remove(doing).is_some() {
            info!("history: writing to {} again", self.shared.path.display());
        }
    }

    /// Opens the database, creating it and its tables if need be. A file
    /// that is not a database is put aside and a fresh one made.
    fn open(&mut self) {
        let shared = self.shared.clone();
        let path = &shared.path;
        let opened = match open_for_writing(path) {
            Err(Trouble::Corrupt(e)) => {
                warn!("history: {}: {e}", path.display());
                self.put_aside();
                open_for_writing(path)
            }
            opened => opened,
        };
        let (db, recover) = match opened.and_then(|(db, recover)| {
            let ids = load_ids(&db)?;
            Ok((db, recover, ids))
        }) {
            Ok((db, recover, ids)) => {
                self.ids = ids;
                (db, recover)
            }
            Err(Trouble::Corrupt(e) | Trouble::Retry(e)) => {
                return self.trouble(Trouble::Retry(e), "open");
            }
        };
        // Coarse steps a crash left unrolled: those of each server's
        // newest minutes.
        for (server, newest) in recover {
            for time in [newest, newest.saturating_sub(2 * ROLLUP_GRACE + 60)] {
                self.mark(server, time);
            }
        }
        self.db = Some(db);
        self.shared.generation.fetch_add(1, Ordering::Release);
        self.clear_trouble("open");
        debug!("history database {} open", path.display());
    }

    /// Renames a corrupt file (and its WAL) aside, `NAME.db.corrupt-TIME`,
    /// so that a fresh one can start; the old one is kept for whoever
    /// wants to recover it.
    fn put_aside(&mut self) {
        self.db = None;
        self.ids.clear();
        self.pending.clear();
        let path = &self.shared.path;
        let stamp = unix_now();
        let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
        match std::fs::rename(path, &aside) {
            Ok(()) => warn!(
                "history: {} is not a valid database: renamed to {}; starting a new one",
                path.display(),
                aside.display()
            ),
            Err(e) => warn!("history: cannot rename {}: {e}", path.display()),
        }
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            let _ = std::fs::rename(&side, format!("{}{suffix}", aside.display()));
        }
    }

    fn db(&self) -> Result<&Connection, Trouble> {
        self.db
            .as_ref()
            .ok_or(Trouble::Retry(rusqlite::Error::InvalidQuery))
    }

    /// One transaction for all the jobs: all written, or none.
    fn apply(&mut self, jobs: &[Job]) -> Result<(), Trouble> {
        let mut marks = Vec::new();
        let mut new_ids = Vec::new();
        let mut forgotten = Vec::new();
        {
            let db = self.db()?;
            let tx = db.unchecked_transaction()?;
            for job in jobs {
                match job {
                    Job::Minutes(rows) => {
                        let mut insert = tx.prepare(
                            "INSERT OR IGNORE INTO minutes VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )?;
                        let mut replace = tx.prepare(
                            "INSERT OR REPLACE INTO minutes VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )?;
                        let mut select = tx.prepare(&select_steps("minutes"))?;
                        for Row { server, step } in rows {
                            let id = server_id(&tx, &self.ids, &mut new_ids, server)?;
                            // A minute stored already (by a relay stopped
                            // within it, before this one started) is
                            // combined with, not replaced.
                            if insert_step(&mut insert, id, step)? == 0 {
                                let stored = query_steps(&mut select, id, step.time, step.time)?;
                                let both = stored.iter().chain([step]);
                                insert_step(&mut replace, id, &rollup::combine(step.time, both))?;
                            }
                            marks.push((id, step.time));
                        }
                    }
                    // In transactions of their own (see `import`).
                    Job::Import(_) => {}
                    Job::Forget(server) => {
                        if let Some(id) = known_id(&self.ids, &new_ids, server) {
                            delete_server(&tx, id)?;
                            forgotten.push(server.clone());
                        }
                    }
                    Job::Keep(servers) => {
                        let keep: BTreeSet<&str> = servers.iter().map(String::as_str).collect();
                        let gone: Vec<(String, i64)> = self
                            .ids
                            .iter()
                            .filter(|(name, _)| !keep.contains(name.as_str()))
                            .map(|(name, id)| (name.clone(), *id))
                            .collect();
                        for (name, id) in gone {
                            delete_server(&tx, id)?;
                            forgotten.push(name);
                        }
                    }
                }
            }
            tx.commit()?;
        }
        self.ids.extend(new_ids);
        for name in forgotten {
            if let Some(id) = self.ids.remove(&name) {
                for servers in self.pending.values_mut() {
                    servers.remove(&id);
                }
                info!("history: the rows of removed server {name} are deleted");
            }
        }
        for (id, time) in marks {
            self.mark(id, time);
        }
        Ok(())
    }

    /// Imports a history file's histories, [`IMPORT_CHUNK`] servers a
    /// transaction: a migration of thousands of servers never holds the
    /// whole of it in one WAL. A stop half-way imports the rest next time
    /// (a minute already there is kept), and the database then notes that
    /// it is done.
    fn import(&mut self, histories: &[(String, Box<History>)]) -> Result<(), Trouble> {
        let done: Option<i64> = self
            .db()?
            .query_row("SELECT 1 FROM meta WHERE key = 'imported'", [], |row| {
                row.get(0)
            })
            .optional()?;
        if done.is_some() {
            return Ok(());
        }
        let mut count = 0;
        for chunk in histories.chunks(IMPORT_CHUNK) {
            let mut new_ids = Vec::new();
            let mut marks = Vec::new();
            {
                let db = self.db()?;
                let tx = db.unchecked_transaction()?;
                // What the relay wrote since it started is newer: an
                // imported minute never replaces it.
                let mut insert =
                    tx.prepare("INSERT OR IGNORE INTO minutes VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
                for (server, history) in chunk {
                    let id = server_id(&tx, &self.ids, &mut new_ids, server)?;
                    for step in rollup::minutes_of_saved(history) {
                        insert_step(&mut insert, id, &step)?;
                        marks.push((id, step.time));
                        count += 1;
                    }
                }
                drop(insert);
                tx.commit()?;
            }
            self.ids.extend(new_ids);
            for (id, time) in marks {
                self.mark(id, time);
            }
        }
        self.db()?.execute(
            "INSERT OR REPLACE INTO meta VALUES ('imported', ?1)",
            [unix_now() as i64],
        )?;
        info!(
            "history: {count} minutes of {} server(s) imported from the history file",
            histories.len()
        );
        Ok(())
    }

    /// A minute at `time` of server `id` changes its quarter, hour and day.
    fn mark(&mut self, id: i64, time: u64) {
        for coarse in [Coarse::Quarter, Coarse::Hour, Coarse::Day] {
            let start = time - time % coarse.secs();
            self.pending.entry((coarse, start)).or_default().insert(id);
        }
    }

    /// Rolls up the coarse steps that ended [`ROLLUP_GRACE`] ago (all of
    /// them when `everything`, at shutdown: a partial step is rolled up
    /// again when more of its minutes come).
    fn roll_up(&mut self, everything: bool) -> Result<(), Trouble> {
        let now = unix_now();
        let due: Vec<(Coarse, u64)> = self
            .pending
            .keys()
            .filter(|(coarse, start)| everything || start + coarse.secs() + ROLLUP_GRACE <= now)
            .copied()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        {
            let db = self.db()?;
            let tx = db.unchecked_transaction()?;
            let mut statements = RollupStatements::new(&tx)?;
            for key in &due {
                let (coarse, start) = *key;
                let Some(servers) = self.pending.get(key) else {
                    continue;
                };
                for &id in servers {
                    statements.roll_up(coarse, start, id)?;
                }
            }
            drop(statements);
            tx.commit()?;
        }
        for key in due {
            self.pending.remove(&key);
        }
        Ok(())
    }

    /// Deletes what is past each tier's retention, every [`PRUNE_EVERY`].
    fn prune_if_due(&mut self) -> Result<(), Trouble> {
        if self.last_prune.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return Ok(());
        }
        self.last_prune = Some(Instant::now());
        let now = unix_now();
        let retention = self.shared.retention;
        let cutoffs = [
            ("minutes", retention.minutes),
            ("quarters", retention.quarters),
            ("hours", retention.hours),
            ("days", retention.days),
        ]
        .map(|(table, kept)| (table, now.saturating_sub(kept.as_secs()) as i64));
        let db = self.db()?;
        let tx = db.unchecked_transaction()?;
        let mut deleted = 0;
        for (table, cutoff) in cutoffs {
            // Server by server: each delete is a range of the primary key.
            let mut delete = tx.prepare(&format!(
                "DELETE FROM {table} WHERE server = ?1 AND time < ?2"
            ))?;
            for id in self.ids.values() {
                deleted += delete.execute(params![id, cutoff])?;
            }
        }
        tx.commit()?;
        if deleted > 0 {
            debug!("history: {deleted} rows past their retention deleted");
        }
        Ok(())
    }

    fn note_size(&self) {
        let Some(db) = &self.db else { return };
        let size: rusqlite::Result<i64> = db.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |row| row.get(0),
        );
        if let Ok(size) = size {
            self.shared.count(|counts| counts.bytes = size as u64);
        }
    }
}

/// One made-up step for [`fill`]: each series' mean and maximum (as a
/// [`super::history::Reading`] holds them) and the bytes moved.
pub struct MadeUpStep {
    pub server: String,
    pub time: u64,
    pub mean: super::history::Reading,
    pub max: super::history::Reading,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Writes steps straight into the table of `tier` of the database at
/// `path` (made, with its tables, if need be), replacing what is there:
/// a year of history for benchmarks and pictures without a year of
/// waiting. Not for a database a relay has open. Returns the rows written.
pub fn fill(
    path: &Path,
    tier: Tier,
    steps: impl IntoIterator<Item = MadeUpStep>,
) -> Result<usize, String> {
    let failed = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let (db, _) =
        open_for_writing(path).map_err(|(Trouble::Corrupt(e) | Trouble::Retry(e))| failed(e))?;
    let tx = db.unchecked_transaction().map_err(failed)?;
    let mut ids = HashMap::new();
    let mut new_ids = Vec::new();
    let mut insert = tx
        .prepare(&format!(
            "INSERT OR REPLACE INTO {} VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            tier.table()
        ))
        .map_err(failed)?;
    let mut count = 0;
    for made_up in steps {
        let id = server_id(&tx, &ids, &mut new_ids, &made_up.server).map_err(failed)?;
        ids.extend(new_ids.drain(..));
        let step = Step {
            time: made_up.time,
            mean: point_of(&made_up.mean.values),
            max: point_of(&made_up.max.values),
            rx_bytes: made_up.rx_bytes,
            tx_bytes: made_up.tx_bytes,
        };
        insert_step(&mut insert, id, &step).map_err(failed)?;
        count += 1;
    }
    drop(insert);
    tx.commit().map_err(failed)?;
    Ok(count)
}

/// Lowers the calling thread's priority (Linux: the niceness is a
/// thread's own): [`NICENESS`]. Failing that, it runs as it is.
fn yield_to_the_loop() {
    let current = rustix::process::getpriority_process(None).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(None, current + NICENESS) {
        debug!("history: cannot lower this thread's priority: {e}");
    }
}

fn rows_in(jobs: &[Job]) -> usize {
    jobs.iter().map(rows_of).sum()
}

fn unix_now() -> u64 {
    unix_seconds(SystemTime::now())
}

/// A server's row id, if it has one: `ids` holds every row of `servers`
/// (read at open), `new_ids` those made in the transaction under way.
fn known_id(ids: &HashMap<String, i64>, new_ids: &[(String, i64)], server: &str) -> Option<i64> {
    ids.get(server).copied().or_else(|| {
        new_ids
            .iter()
            .find_map(|(name, id)| (name == server).then_some(*id))
    })
}

/// A server's row id, made on its first row.
fn server_id(
    tx: &Connection,
    ids: &HashMap<String, i64>,
    new_ids: &mut Vec<(String, i64)>,
    server: &str,
) -> rusqlite::Result<i64> {
    if let Some(id) = known_id(ids, new_ids, server) {
        return Ok(id);
    }
    tx.execute("INSERT OR IGNORE INTO servers (name) VALUES (?1)", [server])?;
    let id = tx.query_row("SELECT id FROM servers WHERE name = ?1", [server], |row| {
        row.get(0)
    })?;
    new_ids.push((server.to_owned(), id));
    Ok(id)
}

/// Runs an insert of a step; the rows it changed (0: one was there and
/// the insert ignores it).
fn insert_step(insert: &mut rusqlite::Statement, id: i64, step: &Step) -> rusqlite::Result<usize> {
    insert.execute(params![
        id,
        step.time as i64,
        &step.mean[..],
        &step.max[..],
        step.rx_bytes.min(i64::MAX as u64) as i64,
        step.tx_bytes.min(i64::MAX as u64) as i64,
    ])
}

fn delete_server(tx: &Connection, id: i64) -> rusqlite::Result<()> {
    for table in ["minutes", "quarters", "hours", "days"] {
        tx.execute(&format!("DELETE FROM {table} WHERE server = ?1"), [id])?;
    }
    tx.execute("DELETE FROM servers WHERE id = ?1", [id])?;
    Ok(())
}

fn select_steps(table: &str) -> String {
    format!(
        "SELECT time, mean, max, rx_bytes, tx_bytes FROM {table} \
         WHERE server = ?1 AND time >= ?2 AND time <= ?3 ORDER BY time"
    )
}

/// The steps of server `id` from `first` to `last` (unix seconds, both
/// included), oldest first, with a statement of [`select_steps`].
fn query_steps(
    select: &mut rusqlite::Statement,
    id: i64,
    first: u64,
    last: u64,
) -> rusqlite::Result<Vec<Step>> {
    let steps = select.query_map(params![id, first as i64, last as i64], |row| {
        // Whatever a hand-edited row holds reads as something: a blob of
        // another size is a gap, a number of another kind a zero.
        let number = |at| -> rusqlite::Result<u64> {
            Ok(match row.get_ref(at)? {
                ValueRef::Integer(value) => value.max(0) as u64,
                ValueRef::Real(value) => value.max(0.0) as u64,
                _ => 0,
            })
        };
        let blob = |at| -> rusqlite::Result<Point> {
            Ok(match row.get_ref(at)? {
                ValueRef::Blob(bytes) => point(Some(bytes)),
                _ => GAP,
            })
        };
        Ok(Step {
            time: number(0)?,
            mean: blob(1)?,
            max: blob(2)?,
            rx_bytes: number(3)?,
            tx_bytes: number(4)?,
        })
    })?;
    steps.collect()
}

/// A stored point; a blob of another length (a hand-edited row) is a gap.
fn point(blob: Option<&[u8]>) -> Point {
    blob.and_then(|bytes| <Point>::try_from(bytes).ok())
        .unwrap_or(GAP)
}

/// The statements that roll minutes up, prepared once a pass.
struct RollupStatements<'a> {
    minutes: rusqlite::Statement<'a>,
    quarter: rusqlite::Statement<'a>,
    hour: rusqlite::Statement<'a>,
    day: rusqlite::Statement<'a>,
}

impl<'a> RollupStatements<'a> {
    fn new(tx: &'a Connection) -> rusqlite::Result<RollupStatements<'a>> {
        Ok(RollupStatements {
            minutes: tx.prepare(&select_steps("minutes"))?,
            quarter: tx
                .prepare("INSERT OR REPLACE INTO quarters VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?,
            hour: tx.prepare("INSERT OR REPLACE INTO hours VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?,
            day: tx.prepare(
                "INSERT OR REPLACE INTO days \
                 SELECT server, ?2, sum(rx_bytes), sum(tx_bytes) FROM hours \
                 WHERE server = ?1 AND time >= ?2 AND time <= ?3 GROUP BY server",
            )?,
        })
    }

    /// Rolls up one coarse step of one server from the finer rows stored.
    fn roll_up(&mut self, coarse: Coarse, start: u64, id: i64) -> rusqlite::Result<()> {
        let end = start + coarse.secs() - 1;
        let insert = match coarse {
            Coarse::Quarter => &mut self.quarter,
            Coarse::Hour => &mut self.hour,
            Coarse::Day => {
                self.day.execute(params![id, start as i64, end as i64])?;
                return Ok(());
            }
        };
        let steps = query_steps(&mut self.minutes, id, start, end)?;
        if !steps.is_empty() {
            insert_step(insert, id, &rollup::combine(start, &steps))?;
        }
        Ok(())
    }
}

/// The servers' row ids by name; a hand-edited name that is not text is
/// skipped.
fn load_ids(db: &Connection) -> rusqlite::Result<HashMap<String, i64>> {
    let mut select = db.prepare("SELECT name, id FROM servers")?;
    let ids = select.query_map([], |row| {
        Ok(match row.get_ref(0)? {
            ValueRef::Text(name) => Some((String::from_utf8_lossy(name).into_owned(), row.get(1)?)),
            _ => None,
        })
    })?;
    ids.filter_map(Result::transpose).collect()
}

/// The tables: each tier a table of steps keyed by server and time (unix
/// seconds), the mean and the maximum in `history.rs`'s 15-byte code, and
/// the bytes moved; the days of traffic; and views that decode the code
/// for a person at `sqlite3` (they need its math functions).
fn schema() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS servers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
         CREATE TABLE IF NOT EXISTS days (server INTEGER NOT NULL, time INTEGER NOT NULL,
             rx_bytes INTEGER NOT NULL, tx_bytes INTEGER NOT NULL,
             PRIMARY KEY (server, time)) WITHOUT ROWID;\n",
    );
    for tier in Tier::ALL {
        let table = tier.table();
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (server INTEGER NOT NULL, time INTEGER NOT NULL,
                 mean BLOB NOT NULL, max BLOB NOT NULL,
                 rx_bytes INTEGER NOT NULL, tx_bytes INTEGER NOT NULL,
                 PRIMARY KEY (server, time)) WITHOUT ROWID;
             CREATE VIEW IF NOT EXISTS {table}_readable AS SELECT servers.name AS server,
                 datetime(time, 'unixepoch') AS time, {}, rx_bytes, tx_bytes
                 FROM {table} JOIN servers ON servers.id = {table}.server;\n",
            readable_columns()
        ));
    }
    sql
}

/// The SQL that decodes each series from `mean` and `max`.
fn readable_columns() -> String {
    // A byte of a blob, as a number: its place in a blob of 0..=255.
    let all_bytes: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    let byte = |column: &str, at: usize| {
        format!(
            "(instr(X'{all_bytes}', substr({column}, {}, 1)) - 1)",
            at + 1
        )
    };
    let mut columns = Vec::new();
    for (index, name) in SERIES.iter().enumerate() {
        for (column, suffix) in [("mean", ""), ("max", "_max")] {
            let (at, width) = super::history::layout(index);
            let expression = match (width, *name) {
                (1, "temperature") => {
                    format!("((nullif({}, 128) + 128) % 256 - 128)", byte(column, at))
                }
                (1, _) => format!("(nullif({}, 255) / 2.0)", byte(column, at)),
                (_, name) => {
                    let code = format!(
                        "nullif({} + 256 * {}, 65535)",
                        byte(column, at),
                        byte(column, at + 1)
                    );
                    let decimals = if name == "load1" { 2 } else { 0 };
                    format!("round(power(2, {code} / 1024.0) - 1, {decimals})")
                }
            };
            columns.push(format!("{expression} AS {name}{suffix}"));
        }
    }
    debug_assert_eq!(POINT_BYTES, 15);
    columns.join(", ")
}

/// Opens the database for the writer, with its settings and tables, and
/// says which minutes are each server's newest (a crash may have left
/// their coarse steps unrolled).
fn open_for_writing(path: &Path) -> Result<(Connection, Vec<(i64, u64)>), Trouble> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags).map_err(Trouble::Retry)?;
    let result = (|| -> rusqlite::Result<Vec<(i64, u64)>> {
        db.busy_timeout(BUSY_WAIT)?;
        // The first read of the file: a file that is not a database fails
        // here.
        let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!("history: {} is in {mode} mode, not WAL", path.display());
        }
        db.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -{CACHE_KIB};
             PRAGMA journal_size_limit = {};
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = {SCHEMA_VERSION};",
            16 << 20
        ))?;
        db.execute_batch(&format!("BEGIN; {} COMMIT;", schema()))?;
        let newest = {
            let mut select = db.prepare(
                "SELECT id, (SELECT max(time) FROM minutes WHERE server = servers.id) FROM servers",
            )?;
            let rows = select.query_map([], |row| {
                Ok(match row.get_ref(1)? {
                    ValueRef::Integer(time) => Some((row.get::<_, i64>(0)?, time.max(0) as u64)),
                    _ => None,
                })
            })?;
            rows.filter_map(Result::transpose)
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        Ok(newest)
    })();
    match result {
        Ok(newest) => Ok((db, newest)),
        Err(e) => Err(e.into()),
    }
}

/// The reader thread: answers asks in order, each from a snapshot of the
/// database (WAL: the writer never waits for it, nor it for the writer).
fn read_loop(shared: &Shared) {
    yield_to_the_loop();
    let mut db: Option<(usize, Connection)> = None;
    loop {
        let ask = {
            let mut asks = lock(&shared.asks);
            loop {
                if let Some(ask) = asks.waiting.pop_front() {
                    break ask;
                }
                if asks.stop {
                    return;
                }
                asks = shared
                    .asked
                    .wait(asks)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let generation = shared.generation.load(Ordering::Acquire);
        if db.as_ref().is_some_and(|(opened, _)| *opened != generation) {
            db = None;
        }
        // Not before the writer has made the tables.
        if db.is_none() && generation > 0 {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            db = Connection::open_with_flags(&shared.path, flags)
                .and_then(|conn| {
                    conn.busy_timeout(BUSY_WAIT)?;
                    conn.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB};"))?;
                    Ok(conn)
                })
                .ok()
                .map(|conn| (generation, conn));
        }
        let body = match &db {
            Some((_, conn)) => answer(conn, &ask).map_err(|e| e.to_string()),
            None if generation == 0 => Err("the history database is not open yet".to_owned()),
            None => Err("the history database cannot be opened".to_owned()),
        };
        if body.is_err() {
            // A file put aside, perhaps: open it afresh next time.
            db = None;
        }
        shared.count(|counts| counts.queries += 1);
        lock(&shared.answers).push(Answer { id: ask.id, body });
        let _ = shared.ready.write(1);
    }
}

fn answer(db: &Connection, ask: &Ask) -> rusqlite::Result<String> {
    let id: Option<i64> = db
        .query_row(
            "SELECT id FROM servers WHERE name = ?1",
            [&ask.server],
            |row| row.get(0),
        )
        .optional()?;
    let steps = match id {
        Some(id) => {
            let last = ask.plan.last + ask.plan.step - 1;
            let mut select = db.prepare(&select_steps(ask.tier.table()))?;
            query_steps(&mut select, id, ask.plan.first, last)?
        }
        None => Vec::new(),
    };
    Ok(render(ask, steps))
}

fn render(ask: &Ask, steps: Vec<Step>) -> String {
    let points = rollup::group(&ask.plan, steps);
    if ask.csv {
        rollup::to_csv(&points)
    } else {
        rollup::to_json(&ask.server, ask.last_seen.clone(), ask.range, &points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::history::{self, Reading};
    use crate::relay::rollup::{Plan, Source};

    /// A day in the past, so every quarter, hour and day of it is over.
    const T: u64 = 1_700_000_000 - 1_700_000_000 % DAY_SECS;
    /// Retention that keeps T's steps for a century.
    const KEEP_ALL: Retention = Retention {
        minutes: Duration::from_secs(100 * 366 * DAY_SECS),
        quarters: Duration::from_secs(100 * 366 * DAY_SECS),
        hours: Duration::from_secs(100 * 366 * DAY_SECS),
        days: Duration::from_secs(100 * 366 * DAY_SECS),
    };

    fn step(time: u64, cpu: f64, max: f64, rx_bytes: u64) -> Step {
        let (mut mean, mut peak) = (GAP, GAP);
        history::encode(0, Some(cpu), &mut mean);
        history::encode(0, Some(max), &mut peak);
        Step {
            time,
            mean,
            max: peak,
            rx_bytes,
            tx_bytes: 1,
        }
    }

    fn minutes(server: &str, steps: impl IntoIterator<Item = Step>) -> Job {
        Job::Minutes(
            steps
                .into_iter()
                .map(|step| Row {
                    server: server.into(),
                    step,
                })
                .collect(),
        )
    }

    fn start(dir: &tempfile::TempDir) -> (Store, PathBuf) {
        let path = dir.path().join("relay.db");
        (Store::start(path.clone(), KEEP_ALL).unwrap(), path)
    }

    fn count(db: &Connection, sql: &str) -> i64 {
        db.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// The answers to come, waiting up to 10 s for `n` of them.
    fn answers(store: &Store, n: usize) -> Vec<Answer> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answers = Vec::new();
        while answers.len() < n && Instant::now() < deadline {
            answers.extend(store.answers());
            std::thread::sleep(Duration::from_millis(5));
        }
        answers
    }

    #[test]
    fn a_full_queue_drops_the_oldest_minutes_and_keeps_other_jobs() {
        let rows = |n| minutes("a", vec![step(0, 0.0, 0.0, 0); n]);
        let mut queue = Queue::default();
        assert_eq!(queue.push(Job::Forget("x".into())), 0);
        assert_eq!(queue.push(rows(QUEUE_ROWS - 10)), 0);
        assert_eq!(queue.push(rows(100)), QUEUE_ROWS - 10);
        assert_eq!(queue.rows, 100);
        assert!(matches!(queue.jobs[0], Job::Forget(_)));
        // A failed batch goes back ahead of newer ones, so it is the
        // oldest: dropped first.
        assert_eq!(queue.put_back(vec![rows(QUEUE_ROWS)]), QUEUE_ROWS);
        assert_eq!(queue.rows, 100);
        assert_eq!(queue.jobs.len(), 2);
    }

    #[test]
    fn minutes_roll_up_into_quarters_hours_and_the_days_traffic_with_spikes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = start(&dir);
        // Two hours of a, with one spike; ten minutes of b.
        store.send(minutes(
            "a",
            (0..120).map(|m| {
                let spike = if m == 70 { 100.0 } else { 4.0 };
                step(T + 60 * m, 2.0, spike, 10)
            }),
        ));
        store.send(minutes(
            "b",
            (0..10).map(|m| step(T + 60 * m, 50.0, 60.0, 1)),
        ));
        store.finish(Duration::from_secs(10));
        let db = Connection::open(&path).unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM minutes"), 130);
        assert_eq!(count(&db, "SELECT count(*) FROM quarters"), 8 + 1);
        assert_eq!(count(&db, "SELECT count(*) FROM hours"), 2 + 1);
        let traffic: (i64, i64) = db
            .query_row(
                "SELECT rx_bytes, tx_bytes FROM days JOIN servers ON servers.id = server \
                 WHERE name = 'a'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(traffic, (1200, 120));
        let hour: (Vec<u8>, Vec<u8>) = db
            .query_row(
                "SELECT mean, max FROM hours JOIN servers ON servers.id = server \
                 WHERE name = 'a' AND time = ?1",
                [(T + 3600) as i64],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        let (mean, max) = (point(Some(&hour.0)), point(Some(&hour.1)));
        assert_eq!(history::decode(0, &mean), Some(2.0));
        assert_eq!(history::decode(0, &max), Some(100.0));
        let settings: (String, i64, i32) = db
            .query_row(
                "SELECT * FROM pragma_journal_mode(), pragma_application_id()",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, 0)),
            )
            .unwrap();
        assert_eq!(
            (settings.0.as_str(), settings.1),
            ("wal", i64::from(APPLICATION_ID))
        );
    }

    #[test]
    fn a_read_groups_the_stored_steps_into_the_points_of_its_plan() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = start(&dir);
        store.send(minutes(
            "a",
            (0..10).map(|m| step(T + 60 * m, m as f64, m as f64, 5)),
        ));
        // Written within the writer's next turn; asked until it is.
        let ask = |id, server: &str, csv| Ask {
            id,
            server: server.into(),
            tier: Tier::Minutes,
            plan: Plan {
                source: Source::Database(Tier::Minutes),
                step: 120,
                first: T,
                last: T + 480,
            },
            csv,
            range: "custom",
            last_seen: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let json: serde_json::Value = loop {
            store.ask(ask(1, "a", false)).unwrap();
            let Ok(body) = answers(&store, 1).remove(0).body else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if json["series"]["cpu"][4].is_number() || Instant::now() > deadline {
                break json;
            }
        };
        let cpu: Vec<Option<f64>> = json["series"]["cpu"]
            .as_array()
            .unwrap()
            .iter()
            .map(serde_json::Value::as_f64)
            .collect();
        assert_eq!(cpu, [Some(0.5), Some(2.5), Some(4.5), Some(6.5), Some(8.5)]);
        assert_eq!(json["max"]["cpu"][4], 9.0);
        assert_eq!(json["bytes"]["rx"][0], 10);
        // An unknown server has no rows: all gaps. CSV has a line a point.
        store.ask(ask(2, "nobody", false)).unwrap();
        store.ask(ask(3, "a", true)).unwrap();
        let answers = answers(&store, 2);
        let nobody: serde_json::Value =
            serde_json::from_str(answers[0].body.as_ref().unwrap()).unwrap();
        assert!(
            nobody["series"]["cpu"]
                .as_array()
                .unwrap()
                .iter()
                .all(serde_json::Value::is_null)
        );
        assert_eq!(answers[1].body.as_ref().unwrap().lines().count(), 6);
        store.finish(Duration::from_secs(10));
    }

    #[test]
    fn a_minute_written_twice_is_combined_not_replaced() {
        // A relay stopped within a minute wrote it; the next one writes it
        // again, with the samples after its start.
        let dir = tempfile::tempdir().unwrap();
        for (cpu, max) in [(10.0, 40.0), (30.0, 35.0)] {
            let (store, _) = start(&dir);
            store.send(minutes("a", [step(T, cpu, max, 100)]));
            store.finish(Duration::from_secs(10));
        }
        let db = Connection::open(dir.path().join("relay.db")).unwrap();
        let mut select = db.prepare(&select_steps("minutes")).unwrap();
        let stored = query_steps(&mut select, 1, T, T).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(history::decode(0, &stored[0].mean), Some(20.0));
        assert_eq!(history::decode(0, &stored[0].max), Some(40.0));
        assert_eq!(stored[0].rx_bytes, 200);
    }

    #[test]
    fn hand_edited_rows_read_as_gaps_and_never_beyond_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = start(&dir);
        store.send(minutes("a", [step(T, 5.0, 5.0, 1)]));
        store.finish(Duration::from_secs(10));
        // A person's edits: a blob of another length, a time before 1970,
        // text where bytes go, and many rows outside the span asked.
        let db = Connection::open(&path).unwrap();
        db.execute_batch(&format!(
            "INSERT INTO minutes VALUES (1, {}, x'01', x'0102', -5, 7);
             INSERT INTO minutes VALUES (1, -60, x'00', x'00', 0, 0);
             UPDATE minutes SET rx_bytes = 'lots' WHERE time = {T};
             INSERT INTO servers (name) VALUES ('b');
             INSERT INTO servers (name) VALUES (42);
             INSERT INTO minutes VALUES (3, 'noon', x'00', x'00', 0, 0);
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO minutes SELECT 2, {} + i * 60, x'00', x'00', 0, 0 FROM n;",
            T + 60,
            T + 86_400
        ))
        .unwrap();
        drop(db);
        let (store, _) = start(&dir);
        let plan = Plan {
            source: Source::Database(Tier::Minutes),
            step: 60,
            first: T,
            last: T + 120,
        };
        for (id, server) in [(1, "a"), (2, "b")] {
            let ask = Ask {
                id,
                server: server.into(),
                tier: Tier::Minutes,
                plan: plan.clone(),
                csv: true,
                range: "custom",
                last_seen: None,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let body = loop {
                store.ask(ask.clone()).unwrap();
                match answers(&store, 1).remove(0).body {
                    Ok(body) => break body,
                    Err(e) if Instant::now() < deadline => {
                        assert!(e.contains("not open yet"), "{e}");
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(body.lines().count(), 4, "{server}: three points:\n{body}");
        }
        store.finish(Duration::from_secs(10));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_put_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        std::fs::write(
            &path,
            b"this is not an SQLite database, but it is long enough to look like one: ".repeat(100),
        )
        .unwrap();
        let store = Store::start(path.clone(), KEEP_ALL).unwrap();
        store.send(minutes("a", [step(T, 1.0, 1.0, 0)]));
        store.finish(Duration::from_secs(10));
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("relay.db.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let kept = std::fs::read(dir.path().join(&aside[0])).unwrap();
        assert!(kept.starts_with(b"this is not"));
        let db = Connection::open(&path).unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM minutes"), 1);
    }

    #[test]
    fn a_history_file_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut saved = History::default();
        let mut reading = Reading::default();
        reading.values[0] = Some(30.0);
        saved.record(T, &reading);
        saved.record(T + 600, &reading);
        for run in 0..2 {
            let (store, path) = start(&dir);
            store.send(Job::Import(vec![("a".into(), Box::new(saved.clone()))]));
            // The second run's import must not come back after this.
            if run == 1 {
                let db = Connection::open(&path).unwrap();
                db.execute("DELETE FROM minutes", []).unwrap();
            }
            store.finish(Duration::from_secs(10));
            let db = Connection::open(&path).unwrap();
            let expected = if run == 0 { 10 } else { 0 };
            assert_eq!(
                count(&db, "SELECT count(*) FROM minutes"),
                expected,
                "run {run}"
            );
        }
    }

    #[test]
    fn removed_servers_lose_their_rows_and_kept_ones_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = start(&dir);
        for server in ["a", "b", "c"] {
            store.send(minutes(
                server,
                (0..20).map(|m| step(T + 60 * m, 1.0, 1.0, 0)),
            ));
        }
        store.finish(Duration::from_secs(10));
        let (store, _) = start(&dir);
        store.send(Job::Forget("a".into()));
        store.send(Job::Keep(vec!["a".into(), "c".into()]));
        store.finish(Duration::from_secs(10));
        let db = Connection::open(&path).unwrap();
        let names: Vec<String> = db
            .prepare("SELECT name FROM servers")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["c"]);
        for table in ["minutes", "quarters", "hours", "days"] {
            let rows = count(&db, &format!("SELECT count(DISTINCT server) FROM {table}"));
            assert_eq!(rows, 1, "{table}");
        }
    }

    #[test]
    fn rows_past_their_tiers_retention_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let now = unix_now();
        let keep = Retention {
            minutes: Duration::from_secs(3600),
            ..Retention::default()
        };
        let store = Store::start(path.clone(), keep).unwrap();
        let old = now - 7200 - now % 60;
        store.send(minutes(
            "a",
            [
                step(old, 1.0, 1.0, 0),
                step(now - 60 - now % 60, 1.0, 1.0, 0),
            ],
        ));
        store.finish(Duration::from_secs(10));
        // The prune runs at the first turn of a writer; the next run's.
        let store = Store::start(path.clone(), keep).unwrap();
        store.send(Job::Keep(vec!["a".into()]));
        store.finish(Duration::from_secs(10));
        let db = Connection::open(&path).unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM minutes"), 1);
        assert_eq!(
            count(&db, "SELECT count(*) FROM hours"),
            2,
            "hours are kept a year"
        );
    }
}
