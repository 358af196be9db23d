//! The registry of servers (agents) and the state file that holds it.
//!
//! # State file
//!
//! JSON, default `./vstats-relay.json`, mode 0600, servers in the order they
//! were added:
//!
//! ```json
//! {
//!   "version": 1,
//!   "servers": [
//!     {
//!       "id": "3f2a9c0b1d4e",
//!       "name": "pi",
//!       "location": "上海",
//!       "token_sha256": "<64 lowercase hex digits>",
//!       "created": "2024-01-01T12:00:00Z"
//!     }
//!   ]
//! }
//! ```
//!
//! - `id`: 12 random lowercase hex digits, unique in the file.
//! - `token_sha256`: SHA-256 of the token's text. The token itself (256
//!   random bits as 64 lowercase hex digits) is shown once by
//!   `vstats-relay server add` and stored nowhere.
//! - `name` (1-64 characters), `location` (0-64): free text without control
//!   characters.
//!
//! Writers ([`update`]) hold an exclusive `flock` on `<file>.lock` from load
//! to save, so two CLI commands running at once do not lose each other's
//! change. Saves replace the file atomically, so a reader (the running relay)
//! needs no lock: it sees the old version or the new one, never a mix.
//!
//! A state path that is a symlink is resolved first ([`resolve`]): the lock,
//! the temp file and the rename are all beside the file the link points to,
//! so the link stays a link and writers through the link and through the
//! target share one lock. Temp files are `.<file>.tmp.<pid>`; a writer
//! killed mid-save leaves one behind, and the next writer removes it while
//! holding the lock.

pub use super::compat::Refusal;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where the state file is unless `--state` or `VSTATS_STATE` says otherwise.
pub const DEFAULT_STATE_FILE: &str = "vstats-relay.json";

const FORMAT_VERSION: u32 = 1;
const MAX_FIELD_CHARS: usize = 64;
const ID_BYTES: usize = 6;
const TOKEN_BYTES: usize = 32;

/// One registered server.
#[derive(Clone, PartialEq, Eq)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub location: String,
    pub token_sha256: [u8; 32],
    /// RFC 3339, UTC.
    pub created: String,
}

impl fmt::Debug for Server {
    // The hash stays out of logs: with it, a leaked log would let anyone try
    // token guesses offline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("location", &self.location)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The registered servers, in insertion order.
#[derive(Clone)]
pub struct Registry {
    servers: Vec<Server>,
    /// Token hash to position in `servers`.
    by_token: HashMap<[u8; 32], usize>,
    /// Id to position in `servers`: loading and editing a fleet of
    /// thousands must not be quadratic.
    by_id: HashMap<String, usize>,
}

impl fmt::Debug for Registry {
    // The index would print every token hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.servers).finish()
    }
}

/// Why the registry could not be read, changed or written.
#[derive(Debug)]
pub enum RegistryError {
    /// Reading, writing or locking a file failed.
    Io { path: PathBuf, source: io::Error },
    /// The state file is not valid JSON or breaks a rule of the format;
    /// `problem` says where (serde's line and column) and what. Boxed:
    /// it is rare, and large beside the other variants.
    Corrupt {
        path: PathBuf,
        problem: Box<Corruption>,
    },
    /// No server has this id.
    UnknownServer(String),
    /// A name or location was refused.
    Invalid(FieldError),
    /// The system's random number generator failed, so no token or id.
    /// (rustls' error for it says nothing more.)
    Random,
}

/// What is wrong with a state file: the detail of
/// [`RegistryError::Corrupt`].
#[derive(Debug)]
pub enum Corruption {
    /// Not JSON, or not the shape of a state file.
    Json(serde_json::Error),
    /// A format version this relay does not read.
    Version(u32),
    /// A server's id, name or location breaks its rule.
    Field { id: String, problem: FieldError },
    /// Two records have this id.
    DuplicateId(String),
    /// The server with this id has a `token_sha256` that is not 64 hex
    /// digits.
    TokenHash(String),
    /// Two servers (these ids) have the same token hash.
    SharedToken { first: String, second: String },
}

/// Which text field of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    Name,
    Location,
}

/// Why a name, location or id is refused: the detail of
/// [`RegistryError::Invalid`] and [`Corruption::Field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    /// Blank where at least one character is required.
    Empty(Field),
    /// Longer than 64 characters; `chars` is its length.
    TooLong { field: Field, chars: usize },
    /// Holds a control character (a newline, an escape sequence).
    ControlCharacter(Field),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            RegistryError::Corrupt { path, problem } => {
                write!(f, "{}: not a valid state file: {problem}", path.display())
            }
            RegistryError::UnknownServer(id) => write!(f, "no server with id '{id}'"),
            RegistryError::Invalid(problem) => write!(f, "{problem}"),
            RegistryError::Random => f.write_str("the system random number generator failed"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Io { source, .. } => Some(source),
            RegistryError::Corrupt { problem, .. } => match &**problem {
                Corruption::Json(e) => Some(e),
                _ => None,
            },
            RegistryError::UnknownServer(_) | RegistryError::Invalid(_) | RegistryError::Random => {
                None
            }
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Json(e) => write!(f, "{e}"),
            Corruption::Version(version) => write!(
                f,
                "version {version} (this relay reads version {FORMAT_VERSION})"
            ),
            Corruption::Field { id, problem } => write!(f, "server '{id}': {problem}"),
            Corruption::DuplicateId(id) => write!(f, "server '{id}': the id is used twice"),
            Corruption::TokenHash(id) => {
                write!(f, "server '{id}': token_sha256 is not 64 hex digits")
            }
            Corruption::SharedToken { first, second } => {
                write!(f, "servers '{first}' and '{second}' have the same token")
            }
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Id => "id",
            Field::Name => "name",
            Field::Location => "location",
        })
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Empty(field) => write!(f, "{field} must not be empty"),
            FieldError::TooLong { field, chars } => write!(
                f,
                "{field} is {chars} characters long (at most {MAX_FIELD_CHARS})"
            ),
            FieldError::ControlCharacter(field) => {
                write!(f, "{field} contains a control character")
            }
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What changed between two versions of the registry, as ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Still registered, but under a new token: their agents must reconnect.
    pub token_changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.token_changed.is_empty()
    }
}

/// The on-disk shape; [`Server`] itself is not serializable so that no API
/// response can carry a token hash by accident.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    servers: Vec<ServerRecord>,
}

#[derive(Serialize, Deserialize)]
struct ServerRecord {
    id: String,
    name: String,
    location: String,
    token_sha256: String,
    created: String,
}

impl Registry {
    pub fn empty() -> Registry {
        Registry {
            servers: Vec::new(),
            by_token: HashMap::new(),
            by_id: HashMap::new(),
        }
    }

    /// A missing file is an empty registry (first start); a corrupt one is an
    /// error that names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        Ok(Registry::load_if_present(path)?.unwrap_or_else(Registry::empty))
    }

    /// As [`Registry::load`], but `None` for a missing file: a running relay
    /// must tell a file gone for a moment (an editor's save, a restore) from
    /// a registry emptied on purpose.
    pub fn load_if_present(path: &Path) -> Result<Option<Registry>, RegistryError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path)(e)),
        };
        Registry::from_json(&bytes)
            .map(Some)
            .map_err(|problem| RegistryError::Corrupt {
                path: path.to_owned(),
                problem: Box::new(problem),
            })
    }

    /// The registry a state file's text holds.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Registry, Corruption> {
        let file: StateFile = serde_json::from_slice(bytes).map_err(Corruption::Json)?;
        Registry::from_file(file)
    }

    fn from_file(file: StateFile) -> Result<Registry, Corruption> {
        if file.version != FORMAT_VERSION {
            return Err(Corruption::Version(file.version));
        }
        let mut registry = Registry::empty();
        for record in file.servers {
            let id = &record.id;
            check_field(Field::Id, id, 1)
                .and_then(|()| check_field(Field::Name, &record.name, 1))
                .and_then(|()| check_field(Field::Location, &record.location, 0))
                .map_err(|problem| Corruption::Field {
                    id: id.clone(),
                    problem,
                })?;
            if registry.get(id).is_some() {
                return Err(Corruption::DuplicateId(id.clone()));
            }
            let token_sha256 = digest_from_hex(&record.token_sha256)
                .ok_or_else(|| Corruption::TokenHash(id.clone()))?;
            if let Some(&other) = registry.by_token.get(&token_sha256) {
                return Err(Corruption::SharedToken {
                    first: registry.servers[other].id.clone(),
                    second: id.clone(),
                });
            }
            registry.push(Server {
                id: record.id,
                name: record.name,
                location: record.location,
                token_sha256,
                created: record.created,
            });
        }
        Ok(registry)
    }

    /// Atomic: writes `.<file>.tmp.<pid>` in the directory of the file
    /// `path` resolves to ([`resolve`]), fsyncs it, renames it over that
    /// file and fsyncs the directory, so a crash leaves the old file or the
    /// new one, and a symlink stays a symlink. Mode 0600: the file holds
    /// token hashes.
    ///
    /// The new file keeps the owner of the one it replaces (or of the
    /// directory, for a first save): `server add` run as root must not leave
    /// a file the relay's own unprivileged user can no longer read.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        self.save_resolved(&resolve(path))
    }

    /// [`Registry::save`] to a path [`resolve`] has already followed.
    fn save_resolved(&self, path: &Path) -> Result<(), RegistryError> {
        let json = self.to_json().map_err(|e| io_error(path)(e.into()))?;
        write_atomically(path, &json).map_err(io_error(path))
    }

    /// The text of the state file that holds this registry.
    pub(crate) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let file = StateFile {
            version: FORMAT_VERSION,
            servers: self
                .servers
                .iter()
                .map(|server| ServerRecord {
                    id: server.id.clone(),
                    name: server.name.clone(),
                    location: server.location.clone(),
                    token_sha256: to_hex(&server.token_sha256),
                    created: server.created.clone(),
                })
                .collect(),
        };
        let mut json = serde_json::to_vec_pretty(&file)?;
        json.push(b'\n');
        Ok(json)
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The server with this id.
    pub fn get(&self, id: &str) -> Option<&Server> {
        self.servers.get(*self.by_id.get(id)?)
    }

    /// Registers a server under a fresh id and token. Returns the new server
    /// and its token: the only time the token exists in clear.
    pub fn add(&mut self, name: &str, location: &str) -> Result<(Server, String), RegistryError> {
        check_field(Field::Name, name, 1).map_err(RegistryError::Invalid)?;
        check_field(Field::Location, location, 0).map_err(RegistryError::Invalid)?;
        let id = loop {
            let id = to_hex(&random::<ID_BYTES>()?);
            if self.get(&id).is_none() {
                break id;
            }
        };
        let (token, token_sha256) = self.new_token()?;
        let server = Server {
            id,
            name: name.to_owned(),
            location: location.to_owned(),
            token_sha256,
            created: crate::protocol::rfc3339(SystemTime::now()),
        };
        self.push(server.clone());
        Ok((server, token))
    }

    pub fn remove(&mut self, id: &str) -> Result<Server, RegistryError> {
        let position = self.position(id)?;
        let server = self.servers.remove(position);
        self.by_token.clear();
        self.by_id.clear();
        for (position, server) in self.servers.iter().enumerate() {
            self.by_token.insert(server.token_sha256, position);
            self.by_id.insert(server.id.clone(), position);
        }
        Ok(server)
    }

    /// Gives the server a new token and returns it; the old one stops working.
    pub fn rotate_token(&mut self, id: &str) -> Result<String, RegistryError> {
        let position = self.position(id)?;
        let (token, token_sha256) = self.new_token()?;
        let old = std::mem::replace(&mut self.servers[position].token_sha256, token_sha256);
        self.by_token.remove(&old);
        self.by_token.insert(token_sha256, position);
        Ok(token)
    }

    /// The server this token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&Server> {
        let presented = sha256(token);
        // The map compares digests of what the client sent, which tells a
        // timing attacker nothing about any token; the final comparison is
        // constant-time all the same, as PROTOCOL.md promises.
        let server = &self.servers[*self.by_token.get(&presented)?];
        constant_time_eq(&server.token_sha256, &presented).then_some(server)
    }

    /// The server with this id, if `token` is its token: a vStats agent
    /// names its server as well as presenting the token. An unknown id and
    /// a wrong token take the same path, one hash and one constant-time
    /// comparison (against a digest no token has, for an unknown id), so
    /// the time taken tells nothing about the token; the answer says which
    /// it was, as vStats' own server does (ids are not secret).
    pub fn authenticate_server(&self, id: &str, token: &str) -> Result<&Server, Refusal> {
        const NO_TOKEN: [u8; 32] = [0; 32];
        let presented = sha256(token);
        let server = self.get(id);
        let expected = server.map_or(&NO_TOKEN, |server| &server.token_sha256);
        let matches = constant_time_eq(expected, &presented);
        match server {
            Some(server) if matches => Ok(server),
            Some(_) => Err(Refusal::WrongToken),
            None => Err(Refusal::UnknownServer),
        }
    }

    /// What changed from `old` to `self`, each list in file order. A running
    /// relay broadcasts `server_added`/`server_removed` and closes the agents
    /// of removed or re-tokened servers with 1008.
    pub fn changes_since(&self, old: &Registry) -> Changes {
        let old_tokens: HashMap<&str, &[u8; 32]> = old
            .servers
            .iter()
            .map(|server| (server.id.as_str(), &server.token_sha256))
            .collect();
        let new_ids: HashSet<&str> = self
            .servers
            .iter()
            .map(|server| server.id.as_str())
            .collect();
        let mut changes = Changes::default();
        for server in &self.servers {
            match old_tokens.get(server.id.as_str()) {
                None => changes.added.push(server.id.clone()),
                Some(&old_token) if *old_token != server.token_sha256 => {
                    changes.token_changed.push(server.id.clone())
                }
                Some(_) => {}
            }
        }
        changes.removed = old
            .servers
            .iter()
            .filter(|server| !new_ids.contains(server.id.as_str()))
            .map(|server| server.id.clone())
            .collect();
        changes
    }

    fn push(&mut self, server: Server) {
        self.by_token
            .insert(server.token_sha256, self.servers.len());
        self.by_id.insert(server.id.clone(), self.servers.len());
        self.servers.push(server);
    }

    fn position(&self, id: &str) -> Result<usize, RegistryError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| RegistryError::UnknownServer(id.to_owned()))
    }

    /// A token and its hash; redrawn in the (2^-256) case of a collision,
    /// since the index needs hashes to be unique.
    fn new_token(&self) -> Result<(String, [u8; 32]), RegistryError> {
        loop {
            let token = to_hex(&random::<TOKEN_BYTES>()?);
            let hash = sha256(&token);
            if !self.by_token.contains_key(&hash) {
                return Ok((token, hash));
            }
        }
    }
}

/// Loads the registry at `path`, lets `change` edit it, and saves it, all
/// under an exclusive lock on `<file>.lock` so concurrent writers queue up
/// instead of overwriting each other. Nothing is saved when `change` fails.
///
/// `path` is resolved once, first: the lock, the load and the save all use
/// the file a symlink points to. Temp files a killed writer left beside it
/// are removed while the lock is held (no other writer can be mid-save).
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut Registry) -> Result<T, RegistryError>,
) -> Result<T, RegistryError> {
    let path = resolve(path);
    let _lock = lock(&path)?;
    remove_stale_temp_files(&path);
    let mut registry = Registry::load(&path)?;
    let value = change(&mut registry)?;
    registry.save_resolved(&path)?;
    Ok(value)
}

/// Symlinks a path may pass through before [`resolve`] gives up (Linux's
/// own limit): the open that follows then fails with `ELOOP`.
const MAX_SYMLINKS: usize = 40;

/// `path` with its final component's symlinks followed, link after link,
/// to the file they end at. A dangling link resolves to where it points (a
/// first save creates the file there); a path that is not a link, or
/// cannot be examined, is returned as it is. Directories on the way are
/// left alone: they do not change which file the lock and rename reach.
pub fn resolve(path: &Path) -> PathBuf {
    let mut path = path.to_owned();
    for _ in 0..MAX_SYMLINKS {
        // Fails for anything but a symlink (EINVAL) or a missing path.
        let Ok(target) = fs::read_link(&path) else {
            break;
        };
        path = match path.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    path
}

/// Replaces the file at `path` (a path [`resolve`] has followed) with
/// `bytes`, atomically: writes `.<file>.tmp.<pid>` beside it, fsyncs it,
/// renames it over the file and fsyncs the directory, so a crash leaves the
/// old file or the new one. Mode 0600. The new file keeps the owner of the
/// one it replaces, or of the directory for a first save.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (dir, name) = dir_and_name(path)?;
    let temp = dir.join(temp_name(name, std::process::id()));
    let owner = fs::metadata(path)
        .or_else(|_| fs::metadata(dir))
        .ok()
        .map(|m| (m.uid(), m.gid()));
    let written = write_new_file(&temp, bytes, owner).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    File::open(dir).and_then(|dir| dir.sync_all())
}

fn write_new_file(path: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> io::Result<()> {
    // A temp file left by a crashed run that had our pid; create_new
    // then refuses anything (a symlink included) that is still there.
    let _ = fs::remove_file(path);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        let mine = out.metadata()?;
        if (mine.uid(), mine.gid()) != (uid, gid) {
            // Only root may give a file away; anyone else keeps it.
            let _ = std::os::unix::fs::fchown(&out, Some(uid), Some(gid));
        }
    }
    out.write_all(bytes)?;
    out.sync_all()
}

/// The directory a file is in (`.` for a bare name) and its name.
fn dir_and_name(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// `.<name>.tmp.<pid>`: hidden, and recognisable as this file's.
fn temp_name(name: &std::ffi::OsStr, pid: u32) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".tmp.{pid}"));
    temp
}

/// Whether `entry` is a temp file of the state file `name`, as
/// [`temp_name`] makes them. The all-digit pid makes the match unambiguous:
/// no other state file's temp file has this shape.
fn is_temp_of(entry: &std::ffi::OsStr, name: &std::ffi::OsStr) -> bool {
    entry
        .as_bytes()
        .strip_prefix(b".")
        .and_then(|rest| rest.strip_prefix(name.as_bytes()))
        .and_then(|rest| rest.strip_prefix(b".tmp."))
        .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit))
}

/// Removes the temp files writers killed mid-save left beside `path`. Only
/// under the lock: a live writer's temp file would look the same.
fn remove_stale_temp_files(path: &Path) {
    let Ok((dir, name)) = dir_and_name(path) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_temp_of(&entry.file_name(), name) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn lock(path: &Path) -> Result<nix::fcntl::Flock<File>, RegistryError> {
    let mut lock_path = OsString::from(path);
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_error(&lock_path)(errno.into()))
}

/// Identity of one version of a file, for noticing changes by polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: (i64, i64),
    len: u64,
    inode: u64,
}

/// The stamp of the file's current version (modification time with
/// nanoseconds, length, inode: an atomic save always changes the inode);
/// `None` when the file cannot be examined, usually because it does not exist.
/// Symlinks are followed: a state path that is a link is stamped by the file
/// it points to, which is the one saves replace.
pub fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: (meta.mtime(), meta.mtime_nsec()),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// `Ok(())` or why `value` is not an acceptable `field`.
fn check_field(field: Field, value: &str, min_chars: usize) -> Result<(), FieldError> {
    let chars = value.chars().count();
    if value.trim().is_empty() && min_chars > 0 {
        Err(FieldError::Empty(field))
    } else if chars > MAX_FIELD_CHARS {
        Err(FieldError::TooLong { field, chars })
    } else if value.chars().any(char::is_control) {
        Err(FieldError::ControlCharacter(field))
    } else {
        Ok(())
    }
}

fn random<const N: usize>() -> Result<[u8; N], RegistryError> {
    let mut bytes = [0; N];
    crate::tls::fill_random(&mut bytes).map_err(|_| RegistryError::Random)?;
    Ok(bytes)
}

fn sha256(text: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// ring's `constant_time` module is deprecated, hence this fold: every byte is
/// compared whatever the earlier ones held. Only the length may leak.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let difference = a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(difference) == 0
}

fn to_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    let mut digits = hex.chars().map(|c| c.to_digit(16));
    for byte in &mut out {
        let high = digits.next()??;
        let low = digits.next()??;
        *byte = (high * 16 + low) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn state_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("vstats-relay.json")
    }

    #[test]
    fn a_save_keeps_the_owner_of_the_file_it_replaces() {
        // Giving a file away needs root, which is how the CLI runs beside a
        // relay with its own user (and how CI runs these tests).
        let dir = tempfile::tempdir().unwrap();
        if fs::metadata(dir.path()).unwrap().uid() != 0 {
            return;
        }
        let path = state_in(&dir);
        Registry::empty().save(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
        let mut registry = Registry::load(&path).unwrap();
        registry.add("pi", "").unwrap();
        registry.save(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn round_trip_keeps_order_fields_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_in(&dir);
        let mut registry = Registry::empty();
        let (pi, pi_token) = registry.add("pi", "上海").unwrap();
        let (router, _) = registry.add("router", "").unwrap();
        registry.save(&path).unwrap();

        let loaded = Registry::load(&path).unwrap();
        assert_eq!(loaded.servers(), &[pi.clone(), router][..]);
        assert_eq!(loaded.authenticate(&pi_token), Some(&pi));
        assert!(loaded.changes_since(&registry).is_empty());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"location\": \"上海\""), "{text}");
        assert!(!text.contains(&pi_token), "the file holds only hashes");
    }

    #[test]
    fn tokens_and_ids_have_the_documented_shape_and_are_unique() {
        let mut registry = Registry::empty();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let (server, token) = registry.add(&format!("s{i}"), "").unwrap();
            assert_eq!(server.id.len(), 12);
            assert_eq!(token.len(), 64);
            for text in [&server.id, &token] {
                assert!(text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            }
            assert_eq!(server.token_sha256, sha256(&token));
            assert!(seen.insert(server.id));
        }
    }

    #[test]
    fn missing_file_is_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::load(&state_in(&dir)).unwrap();
        assert!(registry.servers().is_empty());
    }

    fn load_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = state_in(&dir);
        fs::write(&path, text).unwrap();
        let error = Registry::load(&path).unwrap_err();
        assert!(matches!(error, RegistryError::Corrupt { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}: ", path.display())),
            "{message}"
        );
        message
    }

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn record(id: &str, name: &str, hash: &str) -> String {
        format!(
            r#"{{"id":"{id}","name":"{name}","location":"","token_sha256":"{hash}","created":"2024-01-01T12:00:00Z"}}"#
        )
    }

    #[test]
    fn corrupt_file_errors_name_the_file_and_the_problem() {
        let message = load_error("{\"version\": 1,\n \"servers\": [}");
        assert!(message.contains("line 2 column"), "{message}");
        assert!(load_error("").contains("line 1 column 0"));
        assert!(load_error(r#"{"servers": []}"#).contains("missing field `version`"));
        assert!(load_error(r#"{"version": 2, "servers": []}"#).contains("version 2"));

        let bad_hash = record("a1", "pi", "xyz");
        let message = load_error(&format!(r#"{{"version":1,"servers":[{bad_hash}]}}"#));
        assert!(message.contains("server 'a1': token_sha256"), "{message}");

        let (a, b) = (record("a1", "pi", HASH), record("a1", "nas", HASH));
        let message = load_error(&format!(r#"{{"version":1,"servers":[{a},{b}]}}"#));
        assert!(
            message.contains("server 'a1': the id is used twice"),
            "{message}"
        );

        let (a, b) = (record("a1", "pi", HASH), record("b2", "nas", HASH));
        let message = load_error(&format!(r#"{{"version":1,"servers":[{a},{b}]}}"#));
        assert!(
            message.contains("'a1' and 'b2' have the same token"),
            "{message}"
        );

        let blank = record("a1", " ", HASH);
        let message = load_error(&format!(r#"{{"version":1,"servers":[{blank}]}}"#));
        assert!(message.contains("name must not be empty"), "{message}");
    }

    #[test]
    fn save_is_atomic_private_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_in(&dir);
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let before = file_stamp(&path).unwrap();

        let mut registry = Registry::empty();
        registry.add("pi", "").unwrap();
        registry.save(&path).unwrap();

        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vstats-relay.json"]);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(file_stamp(&path), Some(before));
        assert_eq!(file_stamp(&dir.path().join("missing")), None);
    }

    #[test]
    fn failed_save_names_the_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        // Renaming a file over a directory fails after the temp file exists.
        fs::create_dir(&path).unwrap();
        let error = Registry::empty().save(&path).unwrap_err();
        assert!(matches!(error, RegistryError::Io { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: ", path.display()))
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );
    }

    #[test]
    fn a_server_id_and_its_token_authenticate_together() {
        let mut registry = Registry::empty();
        let (pi, pi_token) = registry.add("pi", "").unwrap();
        let (nas, nas_token) = registry.add("nas", "").unwrap();
        assert_eq!(
            registry.authenticate_server(&pi.id, &pi_token).unwrap().id,
            pi.id
        );
        // Another server's token is a wrong token, however valid.
        assert_eq!(
            registry
                .authenticate_server(&pi.id, &nas_token)
                .unwrap_err(),
            Refusal::WrongToken
        );
        assert_eq!(
            registry
                .authenticate_server("000000000000", &pi_token)
                .unwrap_err(),
            Refusal::UnknownServer
        );
        assert_eq!(
            registry.authenticate_server("", "").unwrap_err(),
            Refusal::UnknownServer
        );
        let new_token = registry.rotate_token(&nas.id).unwrap();
        assert!(registry.authenticate_server(&nas.id, &nas_token).is_err());
        assert!(registry.authenticate_server(&nas.id, &new_token).is_ok());
    }

    #[test]
    fn authenticate_follows_rotation_and_removal() {
        let mut registry = Registry::empty();
        let (pi, pi_token) = registry.add("pi", "").unwrap();
        let (nas, nas_token) = registry.add("nas", "").unwrap();
        assert_eq!(registry.authenticate(&pi_token).unwrap().id, pi.id);
        assert_eq!(registry.authenticate(&nas_token).unwrap().id, nas.id);
        assert!(registry.authenticate("").is_none());
        assert!(registry.authenticate(&pi_token.to_uppercase()).is_none());

        let new_token = registry.rotate_token(&pi.id).unwrap();
        assert!(registry.authenticate(&pi_token).is_none());
        assert_eq!(registry.authenticate(&new_token).unwrap().id, pi.id);

        registry.remove(&pi.id).unwrap();
        assert!(registry.authenticate(&new_token).is_none());
        // Removal shifts positions; the index must follow.
        assert_eq!(registry.authenticate(&nas_token).unwrap().id, nas.id);
        assert!(matches!(
            registry.remove(&pi.id),
            Err(RegistryError::UnknownServer(id)) if id == pi.id
        ));
        assert!(matches!(
            registry.rotate_token("nope"),
            Err(RegistryError::UnknownServer(_))
        ));
    }

    #[test]
    fn changes_since_lists_added_removed_and_retokened_ids() {
        let mut old = Registry::empty();
        let (kept, _) = old.add("kept", "").unwrap();
        let (gone, _) = old.add("gone", "").unwrap();
        let (rotated, _) = old.add("rotated", "").unwrap();
        let mut new = old.clone();
        new.remove(&gone.id).unwrap();
        new.rotate_token(&rotated.id).unwrap();
        let (fresh, _) = new.add("fresh", "").unwrap();

        let changes = new.changes_since(&old);
        assert_eq!(
            changes,
            Changes {
                added: vec![fresh.id],
                removed: vec![gone.id],
                token_changed: vec![rotated.id],
            }
        );
        assert!(new.get(&kept.id).is_some());
        assert!(old.changes_since(&old).is_empty());
    }

    #[test]
    fn names_and_locations_are_validated() {
        let mut registry = Registry::empty();
        let long = "é".repeat(65);
        for (name, location, expected) in [
            ("", "", "name must not be empty"),
            ("  ", "", "name must not be empty"),
            (long.as_str(), "", "name is 65 characters long (at most 64)"),
            ("pi", long.as_str(), "location is 65 characters long"),
            ("pi\n", "", "name contains a control character"),
            ("pi", "a\u{1b}[31m", "location contains a control character"),
        ] {
            match registry.add(name, location) {
                Err(RegistryError::Invalid(reason)) => {
                    assert!(reason.to_string().starts_with(expected), "{reason}")
                }
                other => panic!("{name:?} {location:?}: {other:?}"),
            }
        }
        assert!(registry.servers().is_empty());
        let at_limit = "上".repeat(64);
        registry.add(&at_limit, &at_limit).unwrap();
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_in(&dir);
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        update(&path, |registry| {
                            registry.add(&format!("t{thread}-{i}"), "")
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(Registry::load(&path).unwrap().servers().len(), 40);
    }

    #[test]
    fn a_missing_file_is_told_apart_from_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_in(&dir);
        assert!(Registry::load_if_present(&path).unwrap().is_none());
        Registry::empty().save(&path).unwrap();
        let loaded = Registry::load_if_present(&path).unwrap().unwrap();
        assert!(loaded.servers().is_empty());
        fs::write(&path, "{").unwrap();
        assert!(matches!(
            Registry::load_if_present(&path),
            Err(RegistryError::Corrupt { .. })
        ));
    }

    #[test]
    fn resolve_follows_links_to_the_final_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let target = real.join("state.json");
        let plain = dir.path().join("plain.json");
        assert_eq!(resolve(&plain), plain, "a missing plain path");
        fs::write(&plain, "").unwrap();
        assert_eq!(resolve(&plain), plain, "an existing plain file");

        // Relative, dangling (the target does not exist yet), then chained.
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("real/state.json", &link).unwrap();
        assert_eq!(resolve(&link), dir.path().join("real/state.json"));
        let chain = real.join("chain.json");
        std::os::unix::fs::symlink(&link, &chain).unwrap();
        assert_eq!(resolve(&chain), dir.path().join("real/state.json"));
        fs::write(&target, "").unwrap();
        assert_eq!(resolve(&chain), dir.path().join("real/state.json"));

        // A loop resolves to some path in it; opening that fails (ELOOP).
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let looped = resolve(&a);
        assert!(looped == a || looped == b, "{looped:?}");
    }

    #[test]
    fn saves_through_a_link_keep_the_link_and_its_stamp_follows() {
        let dir = tempfile::tempdir().unwrap();
        let target = state_in(&dir);
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("vstats-relay.json", &link).unwrap();
        assert_eq!(file_stamp(&link), None, "dangling");

        update(&link, |registry| registry.add("pi", "")).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let first = file_stamp(&link).expect("stamped through the link");
        assert_eq!(Some(first), file_stamp(&target));

        let mut registry = Registry::load(&link).unwrap();
        registry.add("nas", "").unwrap();
        registry.save(&link).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_ne!(file_stamp(&link), Some(first), "a save is a change");
        assert_eq!(Registry::load(&target).unwrap().servers().len(), 2);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["link.json", "vstats-relay.json", "vstats-relay.json.lock"]
        );
    }

    #[test]
    fn temp_files_are_recognised_by_name_and_pid() {
        let name = std::ffi::OsStr::new("state.json");
        let ours = temp_name(name, 4242);
        assert_eq!(ours, ".state.json.tmp.4242");
        assert!(is_temp_of(&ours, name));
        for other in [
            "state.json",
            "state.json.lock",
            ".state.json.tmp.",
            ".state.json.tmp.12a",
            ".state.json.bak.tmp.1",
            ".other.json.tmp.1",
            ".state.json.tmp.1.tmp.2",
        ] {
            assert!(!is_temp_of(std::ffi::OsStr::new(other), name), "{other}");
        }
        // Another state file whose name extends this one's.
        let longer = temp_name(std::ffi::OsStr::new("state.json.tmp.1"), 2);
        assert!(!is_temp_of(&longer, name));
    }

    #[test]
    fn failed_change_saves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_in(&dir);
        let error = update(&path, |registry| registry.remove("nope")).unwrap_err();
        assert_eq!(error.to_string(), "no server with id 'nope'");
        assert!(!path.exists());
    }

    #[test]
    fn debug_output_hides_the_token_hash() {
        let mut registry = Registry::empty();
        let (server, _) = registry.add("pi", "").unwrap();
        let debug = format!("{registry:?}");
        assert!(!debug.contains(&to_hex(&server.token_sha256)));
        assert!(
            !debug.contains(&format!("{:?}", server.token_sha256)),
            "{debug}"
        );
    }

    #[test]
    fn errors_chain_to_their_cause() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let path = state_in(&dir);
        fs::write(&path, "{").unwrap();
        let error = Registry::load(&path).unwrap_err();
        let source = error.source().expect("serde's error");
        assert!(source.is::<serde_json::Error>(), "{source:?}");

        fs::write(&path, r#"{"version": 2, "servers": []}"#).unwrap();
        let error = Registry::load(&path).unwrap_err();
        assert!(
            matches!(&error, RegistryError::Corrupt { problem, .. }
                if matches!(**problem, Corruption::Version(2))),
            "{error:?}"
        );
        assert!(error.source().is_none());

        let error = Registry::empty().add("", "").unwrap_err();
        assert!(matches!(
            error,
            RegistryError::Invalid(FieldError::Empty(Field::Name))
        ));
    }

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<RegistryError>() <= 56);
    }
}
