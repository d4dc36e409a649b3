//! The state store (SPEC §4): an embedded SQLite database in WAL mode holding what manifests
//! cannot — the last applied manifest set, the revisions (every converged apply, for `history`
//! and `rollback`), node conditions, plug instances and their port leases, the fleet lease,
//! intents handed to a running controller, and an event log.
//!
//! # Concurrency
//! Several fleetctl processes may open the same file. Every write runs in an `IMMEDIATE`
//! transaction (one writer at a time, waiting up to [`BUSY_TIMEOUT`]), so read-decide-write
//! sequences such as "count the plugs on node1, then lease port 51003" are atomic across
//! processes. The fleet lease (holder, expiry, fencing token) makes sure only one long-running
//! actor (`apply`, `run`, `drain`) changes the fleet at a time.
//!
//! Time is passed in by callers (milliseconds since the epoch), so tests control it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::condition::{Refused, Schedule, Transition};
use crate::manifest::Source;

/// How long a write waits for another process's write transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the one lease row.
const FLEET_LEASE: &str = "fleet";

/// How long an answered intent is kept.
const INTENT_KEEP_MS: i64 = 24 * 3600 * 1000;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE applied (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    hash TEXT NOT NULL,
    sources TEXT NOT NULL
);
CREATE TABLE lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    kind TEXT NOT NULL,
    api TEXT,
    acquired_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    token INTEGER NOT NULL
);
CREATE TABLE node_conditions (
    node TEXT PRIMARY KEY,
    cordoned INTEGER NOT NULL DEFAULT 0,
    draining INTEGER NOT NULL DEFAULT 0,
    drained INTEGER NOT NULL DEFAULT 0,
    not_ready_since_ms INTEGER,
    reason TEXT,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE plugs (
    id TEXT PRIMARY KEY,
    class TEXT NOT NULL,
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_activity_ms INTEGER NOT NULL,
    message TEXT
);
CREATE TABLE port_leases (
    node TEXT NOT NULL,
    port INTEGER NOT NULL,
    plug TEXT NOT NULL,
    PRIMARY KEY (node, port)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    node TEXT,
    object TEXT,
    message TEXT NOT NULL
);
CREATE TABLE intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    done_ms INTEGER
);
"#,
    r#"
CREATE TABLE replicas (
    service TEXT NOT NULL,
    replica INTEGER NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (service, replica)
);
"#,
    r#"
CREATE TABLE plug_tombstones (
    id TEXT PRIMARY KEY,
    deleted_ms INTEGER NOT NULL
);
"#,
    // When each node's schedule last changed (0: never here): compared with the nodes' marks.
    r#"
ALTER TABLE node_conditions ADD COLUMN schedule_ms INTEGER NOT NULL DEFAULT 0;
"#,
    // The digest each image tag runs as fleet-wide (SPEC §11); '' when its registry could not
    // be asked (it runs by tag until `--refresh`).
    r#"
CREATE TABLE image_digests (
    image TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    resolved_ms INTEGER NOT NULL
);
"#,
    // `fleetctl events --since` and the retention's prune read and delete by time.
    r#"
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
"#,
    // Revisions (SPEC §13): every successful apply, numbered from 1, with what a rollback needs
    // to put it in force again. `applied` stays the record of the last apply attempted (its
    // readers want the manifests last handed to the fleet, converged or not).
    r#"
CREATE TABLE revisions (
    number INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    hash TEXT NOT NULL,
    sources TEXT NOT NULL,
    configs TEXT NOT NULL,
    images TEXT NOT NULL,
    secrets TEXT NOT NULL,
    summary TEXT NOT NULL,
    rollback_of INTEGER
);
"#,
];

/// How long a deleted plug's id is remembered: a copy of it found on a node in that time (on a
/// node that was unreachable when it was deleted) is removed, not adopted.
pub const TOMBSTONE_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open state store {path}")]
    Open {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("state store: {op}")]
    Query {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The store belongs to another fleet.
    #[error(
        "state store {path} belongs to fleet {stored:?}, not {wanted:?}; use --state to pick another"
    )]
    OtherFleet {
        /// Its path.
        path: String,
        /// Fleet it records.
        stored: String,
        /// Fleet of the manifests.
        wanted: String,
    },
    /// Another actor holds the fleet lease.
    #[error("fleet is locked by {holder} since {since}")]
    Locked {
        /// Who holds it.
        holder: String,
        /// Since when (RFC 3339).
        since: String,
        /// The lease row.
        lease: Box<LeaseInfo>,
    },
    /// A write was fenced off: the caller's lease is no longer current.
    #[error("lease lost: another actor took the fleet lease (token {current} > {ours})")]
    Fenced {
        /// Our token.
        ours: i64,
        /// The current token.
        current: i64,
    },
    /// A port is already leased on that node.
    #[error("port {port} on node {node} is already leased to plug {holder}")]
    PortTaken {
        /// Node.
        node: String,
        /// Port.
        port: u16,
        /// Plug holding it.
        holder: String,
    },
    /// No such plug.
    #[error("no plug {0}")]
    NoPlug(String),
    /// A node condition change its guard refuses; nothing was written.
    #[error("node {node}: {source}")]
    Condition {
        /// Node.
        node: String,
        /// The refusal (said in the message: not offered as the error's source too).
        source: Refused,
    },
}

/// One row of `SELECT number, at_ms, actor, hash, images, secrets, summary, rollback_of FROM
/// revisions`.
fn revision_info_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RevisionInfo> {
    let map = |i: usize| -> rusqlite::Result<BTreeMap<String, String>> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    Ok(RevisionInfo {
        number: r.get(0)?,
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        hash: r.get(3)?,
        images: map(4)?,
        secrets: map(5)?,
        summary: r.get(6)?,
        rollback_of: r.get(7)?,
    })
}

/// One row of `SELECT id, at_ms, actor, action, node, object, message FROM events`.
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        node: r.get(4)?,
        object: r.get(5)?,
        message: r.get(6)?,
    })
}

fn q(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

/// The current time in milliseconds since the epoch (the one clock read of this module's
/// callers; decisions take it as a value).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Formats milliseconds since the epoch as RFC 3339 (seconds).
pub fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The fleet lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Who holds it, e.g. `apply by root@vps1 (pid 4242)`.
    pub holder: String,
    /// `apply`, `controller`, `drain`.
    pub kind: String,
    /// The controller API address, when the holder serves one.
    pub api: Option<String>,
    /// When it was taken.
    pub acquired_ms: i64,
    /// When it lapses unless renewed.
    pub expires_ms: i64,
    /// Fencing token: grows with every acquisition.
    pub token: i64,
}

/// Conditions an operator or the controller set on a node, in their stored shape (the
/// `node_conditions` columns, and the API's JSON).
///
/// The three flags are one [`Schedule`]: read it with [`NodeCondition::schedule`] and change it
/// with [`NodeCondition::apply`] (guarded) or [`Store::transition_node`], never by setting a
/// flag, so their precedence is decided in [`crate::condition`] only. The flags stay public
/// fields for the serialised shape and the planner's remaining direct reads (src/plan.rs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCondition {
    /// Takes no new work (also set while draining or drained).
    pub cordoned: bool,
    /// A drain is moving its work away.
    pub draining: bool,
    /// A drain finished; takes nothing until uncordoned.
    pub drained: bool,
    /// Unreachable since (ms), as last recorded by the controller.
    pub not_ready_since_ms: Option<i64>,
    /// Why it is hot (above `cpuHighWatermark`: it takes no new plug), e.g. `cpu 92% > 80% for
    /// 10s`; kept apart from the table's flags ([`Store::set_hot`]) and joined when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot: Option<String>,
    /// Why it is not ready.
    pub reason: Option<String>,
}

impl NodeCondition {
    /// A condition with `schedule` and no readiness record.
    pub fn with_schedule(schedule: Schedule) -> Self {
        let mut c = NodeCondition::default();
        c.set_schedule(schedule);
        c
    }

    /// Whether the node takes new work, and if not why.
    pub fn schedule(&self) -> Schedule {
        Schedule::from_flags(self.cordoned, self.draining, self.drained)
    }

    /// Sets the flags to mean `schedule` (no guard: for building views and fixtures; operators'
    /// and drains' changes go through [`NodeCondition::apply`]).
    pub fn set_schedule(&mut self, schedule: Schedule) {
        (self.cordoned, self.draining, self.drained) = schedule.flags();
    }

    /// Applies `t` when its guard allows it.
    ///
    /// # Errors
    /// [`Refused`] (see [`Schedule::apply`]); the condition is unchanged.
    pub fn apply(&mut self, t: Transition) -> Result<(), Refused> {
        let next = self.schedule().apply(t)?;
        if next != self.schedule() {
            self.set_schedule(next);
        }
        Ok(())
    }
}

/// Lifecycle state of a plug instance (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlugState {
    /// Recorded; its container is being created.
    Pending,
    /// Its container runs.
    Running,
    /// Stopped (idle timeout).
    Stopped,
    /// Stopped under memory pressure.
    Evicted,
    /// Could not be started.
    Failed,
}

impl PlugState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlugState::Pending => "pending",
            PlugState::Running => "running",
            PlugState::Stopped => "stopped",
            PlugState::Evicted => "evicted",
            PlugState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> PlugState {
        match s {
            "running" => PlugState::Running,
            "stopped" => PlugState::Stopped,
            "evicted" => PlugState::Evicted,
            "failed" => PlugState::Failed,
            _ => PlugState::Pending,
        }
    }

    /// Whether its container should be running.
    pub fn wants_running(self) -> bool {
        matches!(self, PlugState::Pending | PlugState::Running)
    }
}

/// A plug instance as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlugRecord {
    /// Id.
    pub id: String,
    /// Class.
    pub class: String,
    /// Owner.
    pub owner: String,
    /// Node it is placed on.
    pub node: String,
    /// Leased host port on that node.
    pub host_port: u16,
    /// State.
    pub state: PlugState,
    /// Creation time (ms).
    pub created_ms: i64,
    /// Last activity (ms).
    pub last_activity_ms: i64,
    /// Last problem, if any.
    pub message: Option<String>,
}

/// The replica count the autoscaler chose for a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRecord {
    /// Replicas.
    pub replicas: u32,
    /// When it was chosen (ms); the cooldown runs from here.
    pub at_ms: i64,
    /// Why, e.g. `cpu 92% > 50% for 10s`.
    pub why: String,
}

/// A node marked hot: it takes no new plug.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotRecord {
    /// Since when (ms).
    pub since_ms: i64,
    /// Why, e.g. `cpu 92% > 80% for 10s`.
    pub why: String,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Sequence number.
    pub id: i64,
    /// When (ms).
    pub at_ms: i64,
    /// Who (`apply`, `controller`, `plug`, ...).
    pub actor: String,
    /// What (`create`, `update`, `remove`, `cordon`, ...).
    pub action: String,
    /// Where.
    pub node: Option<String>,
    /// Which container or object.
    pub object: Option<String>,
    /// Human text.
    pub message: String,
}

/// An intent handed to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Id.
    pub id: i64,
    /// When it was submitted (ms).
    pub at_ms: i64,
    /// Kind, e.g. `apply`, `drain`.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// Where it is.
    pub state: IntentState,
    /// Outcome (JSON or text) once done.
    pub result: Option<String>,
}

/// Where an intent is: submitted, taken by the controller (with progress so far in `result`),
/// answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentState {
    /// Waiting for a controller.
    Pending,
    /// Taken by the controller; `result` may hold progress.
    Running,
    /// Answered: `result` is the outcome.
    Done,
    /// Answered: `result` is the failure.
    Failed,
}

impl IntentState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentState::Pending => "pending",
            IntentState::Running => "running",
            IntentState::Done => "done",
            IntentState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<IntentState> {
        Some(match s {
            "pending" => IntentState::Pending,
            "running" => IntentState::Running,
            "done" => IntentState::Done,
            "failed" => IntentState::Failed,
            _ => return None,
        })
    }
}

impl rusqlite::types::FromSql for IntentState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        IntentState::parse(s).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("unknown intent state {s:?}").into())
        })
    }
}

/// What a revision puts in force (SPEC §13): enough to apply it again without the operator's
/// files, and never a secret value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionContent {
    /// [`crate::manifest::Loaded::sources_hash`]: the manifests and the config files they read.
    pub hash: String,
    /// The manifest files, as applied.
    pub sources: Vec<Source>,
    /// The config files the manifests read (SPEC §12; not secret): path as resolved against
    /// the manifest file naming it → content.
    pub configs: BTreeMap<String, Vec<u8>>,
    /// The digest each image ran as (`""`: by its tag).
    pub images: BTreeMap<String, String>,
    /// Each secret used → its keyed hash under the fleet's key (never the value).
    pub secrets: BTreeMap<String, String>,
}

/// A revision as `fleetctl history` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// 1, 2, 3…
    pub number: i64,
    /// When it was recorded (its apply converged).
    pub at_ms: i64,
    /// Who applied it.
    pub actor: String,
    /// Its manifest hash.
    pub hash: String,
    /// The digest each image ran as.
    pub images: BTreeMap<String, String>,
    /// Each secret used → its keyed hash.
    pub secrets: BTreeMap<String, String>,
    /// What changed from the revision before it, in one line.
    pub summary: String,
    /// The revision it rolled back to, when it was a rollback.
    pub rollback_of: Option<i64>,
}

/// A revision with its manifests (what `fleetctl rollback` applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Number, time, actor, summary.
    pub info: RevisionInfo,
    /// What it puts in force.
    pub content: RevisionContent,
}

/// Config contents as a JSON object of base64 strings (they may be any bytes).
fn encode_configs(m: &BTreeMap<String, Vec<u8>>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text: BTreeMap<&String, String> = m.iter().map(|(k, v)| (k, b64.encode(v))).collect();
    serde_json::to_string(&text).expect("configs serialize")
}

/// The reverse of [`encode_configs`].
fn decode_configs(json: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text: BTreeMap<String, String> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    text.into_iter()
        .map(|(k, v)| {
            b64.decode(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("config {k}: {e}"))
        })
        .collect()
}

/// The state store. Cheap to share behind an `Arc`; methods take `&self`.
pub struct Store {
    conn: Mutex<Connection>,
    path: String,
}

/// Switches the file to WAL, waiting up to [`BUSY_TIMEOUT`] for other processes opening it.
///
/// SQLite does not call the busy handler while it changes the journal mode of a file another
/// connection is creating or switching at the same moment, so twenty `fleetctl` processes
/// opening one fresh state file at once would otherwise fail with "database is locked".
fn enable_wal(conn: &Connection) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(q("enable WAL")(e)),
        }
    }
}

impl Store {
    /// Opens (creating when missing) the store at `path` and migrates it.
    ///
    /// # Errors
    /// The file cannot be created or opened, or a migration fails.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Self::init(conn, path.display().to_string())
    }

    /// An in-memory store (tests).
    ///
    /// # Errors
    /// Migration failure.
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(q("set busy timeout"))?;
        enable_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(q("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(q("enable foreign keys"))?;
        // The database holds kilobytes: a 512 KiB page cache instead of SQLite's default 2 MiB
        // keeps a long-running controller small.
        conn.pragma_update(None, "cache_size", -512)
            .map_err(q("set cache size"))?;
        let store = Store {
            conn: Mutex::new(conn),
            path,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.write("migrate", |tx| {
            let version: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(q("read schema version"))?;
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(m).map_err(q("migrate schema"))?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .map_err(q("record schema version"))?;
            }
            Ok(())
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in an IMMEDIATE transaction and commits when it returns `Ok`.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q(op))?;
        let out = f(&tx)?;
        tx.commit().map_err(q(op))?;
        Ok(out)
    }

    /// Runs a read.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.lock();
        f(&conn)
    }

    /// Binds the store to `fleet`, or fails when it belongs to another fleet.
    ///
    /// # Errors
    /// [`StoreError::OtherFleet`].
    pub fn bind_fleet(&self, fleet: &str) -> Result<(), StoreError> {
        self.write("bind fleet", |tx| {
            let stored: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'fleet'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(q("read fleet name"))?;
            match stored {
                Some(s) if s != fleet => Err(StoreError::OtherFleet {
                    path: self.path.clone(),
                    stored: s,
                    wanted: fleet.to_string(),
                }),
                Some(_) => Ok(()),
                None => tx
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('fleet', ?1)",
                        [fleet],
                    )
                    .map(|_| ())
                    .map_err(q("record fleet name")),
            }
        })
    }

    /// The fleet's key for secret digests (SPEC §12: a keyed hash, so a short password's
    /// digest cannot be guessed offline): 32 random bytes made on first use and kept here.
    ///
    /// # Errors
    /// The store cannot be read or written.
    pub fn secret_key(&self) -> Result<Vec<u8>, StoreError> {
        self.write("secret key", |tx| {
            let stored: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'secret_key'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(q("read secret key"))?;
            if let Some(k) = stored
                .and_then(|s| hex::decode(s).ok())
                .filter(|k| k.len() == 32)
            {
                return Ok(k);
            }
            let key: [u8; 32] = rand::random();
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('secret_key', ?1)",
                [hex::encode(key)],
            )
            .map_err(q("record secret key"))?;
            Ok(key.to_vec())
        })
    }

    // ----- load-driven state (SPEC §14) --------------------------------------------------

    /// The replica count the autoscaler set for each service, with when and why. Kept in the
    /// `meta` table under `autoscale/<service>`, so it survives controller restarts.
    ///
    /// # Errors
    /// Query failure.
    pub fn scale_records(&self) -> Result<BTreeMap<String, ScaleRecord>, StoreError> {
        self.meta_json("autoscale/")
    }

    /// Records `record` as `service`'s count (`None`: forgets it — the service no longer
    /// autoscales).
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when `token` is not the current lease; query failure.
    pub fn record_scale(
        &self,
        token: i64,
        service: &str,
        record: Option<&ScaleRecord>,
    ) -> Result<(), StoreError> {
        self.set_meta_json(token, &format!("autoscale/{service}"), record)
    }

    /// The nodes marked hot under `cpuHighWatermark`, with since when and why (`meta` keys
    /// `hot/<node>`).
    ///
    /// # Errors
    /// Query failure.
    pub fn hot_nodes(&self) -> Result<BTreeMap<String, HotRecord>, StoreError> {
        self.meta_json("hot/")
    }

    /// Marks `node` hot (`Some`) or cool (`None`).
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when `token` is not the current lease; query failure.
    pub fn set_hot(
        &self,
        token: i64,
        node: &str,
        record: Option<&HotRecord>,
    ) -> Result<(), StoreError> {
        self.set_meta_json(token, &format!("hot/{node}"), record)
    }

    /// What the controller measured last ([`crate::load::LoadSnapshot`]), if anything.
    ///
    /// # Errors
    /// Query failure.
    pub fn load_snapshot(&self) -> Result<Option<crate::load::LoadSnapshot>, StoreError> {
        self.read(|c| {
            let json: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = 'load'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(q("read load"))?;
            Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
        })
    }

    /// Replaces the controller's last measurements. Not fenced: it is information, and the
    /// next sample of whichever controller runs replaces it.
    ///
    /// # Errors
    /// Query failure.
    pub fn record_load(&self, snapshot: &crate::load::LoadSnapshot) -> Result<(), StoreError> {
        let json = serde_json::to_string(snapshot).expect("load snapshot serializes");
        self.write("record load", |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('load', ?1)",
                params![json],
            )
            .map_err(q("record load"))?;
            Ok(())
        })
    }

    fn meta_json<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &'static str,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT key, value FROM meta WHERE substr(key, 1, ?1) = ?2")
                .map_err(q("read load state"))?;
            let rows = stmt
                .query_map(params![prefix.len() as i64, prefix], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(q("read load state"))?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (key, value) = row.map_err(q("read load state"))?;
                // A record this version cannot read is left out (as if never made).
                if let Ok(v) = serde_json::from_str(&value) {
                    out.insert(key[prefix.len()..].to_string(), v);
                }
            }
            Ok(out)
        })
    }

    fn set_meta_json<T: Serialize>(
        &self,
        token: i64,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), StoreError> {
        let json = value.map(|v| serde_json::to_string(v).expect("load state serializes"));
        self.write("record load state", |tx| {
            check_fence(tx, token)?;
            match &json {
                Some(j) => tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, j],
                ),
                None => tx.execute("DELETE FROM meta WHERE key = ?1", params![key]),
            }
            .map_err(q("record load state"))?;
            Ok(())
        })
    }

    // ----- lease -------------------------------------------------------------------------

    /// Takes the fleet lease for `ttl` when it is free, expired, or already ours (same holder).
    ///
    /// # Errors
    /// [`StoreError::Locked`] naming the current holder.
    pub fn try_acquire_lease(
        &self,
        holder: &str,
        kind: &str,
        api: Option<&str>,
        ttl: Duration,
        now: i64,
    ) -> Result<LeaseInfo, StoreError> {
        self.write("acquire lease", |tx| {
            let current = read_lease(tx)?;
            if let Some(l) = &current
                && l.expires_ms > now
                && l.holder != holder
            {
                return Err(StoreError::Locked {
                    holder: l.holder.clone(),
                    since: format_ms(l.acquired_ms),
                    lease: Box::new(l.clone()),
                });
            }
            let token = current.as_ref().map_or(0, |l| l.token) + 1;
            let lease = LeaseInfo {
                holder: holder.to_string(),
                kind: kind.to_string(),
                api: api.map(str::to_string),
                acquired_ms: now,
                expires_ms: now + ttl.as_millis() as i64,
                token,
            };
            tx.execute(
                "INSERT INTO lease (name, holder, kind, api, acquired_ms, expires_ms, token)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET holder = ?2, kind = ?3, api = ?4,
                   acquired_ms = ?5, expires_ms = ?6, token = ?7",
                params![
                    FLEET_LEASE,
                    lease.holder,
                    lease.kind,
                    lease.api,
                    now,
                    lease.expires_ms,
                    token
                ],
            )
            .map_err(q("write lease"))?;
            Ok(lease)
        })
    }

    /// Extends our lease by `ttl` from `now`.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when another actor took it meanwhile.
    pub fn renew_lease(&self, token: i64, ttl: Duration, now: i64) -> Result<(), StoreError> {
        self.write("renew lease", |tx| {
            check_fence(tx, token)?;
            tx.execute(
                "UPDATE lease SET expires_ms = ?1 WHERE name = ?2",
                params![now + ttl.as_millis() as i64, FLEET_LEASE],
            )
            .map_err(q("renew lease"))?;
            Ok(())
        })
    }

    /// Gives our lease up (it expires at once). Releasing a lease taken over by someone else
    /// does nothing.
    ///
    /// # Errors
    /// Query failure.
    pub fn release_lease(&self, token: i64) -> Result<(), StoreError> {
        self.write("release lease", |tx| {
            tx.execute(
                "UPDATE lease SET expires_ms = 0 WHERE name = ?1 AND token = ?2",
                params![FLEET_LEASE, token],
            )
            .map_err(q("release lease"))?;
            Ok(())
        })
    }

    /// Ends the lease if it is still the one with `token` (a holder known to be dead).
    ///
    /// # Errors
    /// Query failure.
    pub fn break_lease(&self, token: i64) -> Result<bool, StoreError> {
        self.write("break lease", |tx| {
            let n = tx
                .execute(
                    "UPDATE lease SET expires_ms = 0 WHERE name = ?1 AND token = ?2",
                    params![FLEET_LEASE, token],
                )
                .map_err(q("break lease"))?;
            Ok(n > 0)
        })
    }

    /// The lease row, live or not.
    ///
    /// # Errors
    /// Query failure.
    pub fn lease(&self) -> Result<Option<LeaseInfo>, StoreError> {
        self.read(read_lease)
    }

    // ----- applied manifests -------------------------------------------------------------

    /// Records the manifest set an apply converged to.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when `token` is not the current lease.
    pub fn record_applied(
        &self,
        token: i64,
        actor: &str,
        hash: &str,
        sources: &[Source],
        now: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(sources).expect("sources serialize");
        self.write("record applied manifests", |tx| {
            check_fence(tx, token)?;
            tx.execute(
                "INSERT INTO applied (at_ms, actor, hash, sources) VALUES (?1, ?2, ?3, ?4)",
                params![now, actor, hash, json],
            )
            .map_err(q("record applied manifests"))?;
            Ok(())
        })
    }

    /// The manifest set last applied, with when and its hash.
    ///
    /// # Errors
    /// Query failure.
    pub fn last_applied(&self) -> Result<Option<(Vec<Source>, i64, String)>, StoreError> {
        self.read(|c| {
            let row: Option<(String, i64, String)> = c
                .query_row(
                    "SELECT sources, at_ms, hash FROM applied ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(q("read applied manifests"))?;
            Ok(row.and_then(|(json, at, hash)| {
                serde_json::from_str(&json).ok().map(|s| (s, at, hash))
            }))
        })
    }

    // ----- revisions ---------------------------------------------------------------------

    /// Records `content` as the next revision (1 when there is none), unless it is what the
    /// last revision already holds (same manifest hash, image digests and secret hashes):
    /// `Ok(None)` then, and nothing is written. `token`, when given, must be the current lease.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when `token` is not the current lease; query failure.
    pub fn record_revision(
        &self,
        token: Option<i64>,
        actor: &str,
        content: &RevisionContent,
        summary: &str,
        rollback_of: Option<i64>,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (sources, configs, images, secrets) = (
            serde_json::to_string(&content.sources).expect("sources serialize"),
            encode_configs(&content.configs),
            serde_json::to_string(&content.images).expect("digests serialize"),
            serde_json::to_string(&content.secrets).expect("hashes serialize"),
        );
        self.write("record revision", |tx| {
            if let Some(token) = token {
                check_fence(tx, token)?;
            }
            let last: Option<(i64, String, String, String)> = tx
                .query_row(
                    "SELECT number, hash, images, secrets FROM revisions ORDER BY number DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(q("read last revision"))?;
            if let Some((_, hash, i, s)) = &last
                && *hash == content.hash
                && *i == images
                && *s == secrets
            {
                return Ok(None);
            }
            let number = last.map_or(1, |l| l.0 + 1);
            tx.execute(
                "INSERT INTO revisions (number, at_ms, actor, hash, sources, configs, images, secrets, summary, rollback_of)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![number, now, actor, content.hash, sources, configs, images, secrets, summary, rollback_of],
            )
            .map_err(q("record revision"))?;
            Ok(Some(number))
        })
    }

    /// Every revision, oldest first, without the manifests.
    ///
    /// # Errors
    /// Query failure.
    pub fn revisions(&self) -> Result<Vec<RevisionInfo>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT number, at_ms, actor, hash, images, secrets, summary, rollback_of
                     FROM revisions ORDER BY number",
                )
                .map_err(q("read revisions"))?;
            let rows = stmt
                .query_map([], revision_info_row)
                .map_err(q("read revisions"))?;
            rows.collect::<Result<_, _>>().map_err(q("read revisions"))
        })
    }

    /// Revision `number` with everything a rollback needs, or `None`.
    ///
    /// # Errors
    /// Query failure; a row whose JSON does not parse (a damaged store).
    pub fn revision(&self, number: i64) -> Result<Option<Revision>, StoreError> {
        self.read(|c| {
            let row = c
                .query_row(
                    "SELECT number, at_ms, actor, hash, images, secrets, summary, rollback_of,
                            sources, configs
                     FROM revisions WHERE number = ?1",
                    [number],
                    |r| {
                        let info = revision_info_row(r)?;
                        let sources: String = r.get(8)?;
                        let configs: String = r.get(9)?;
                        Ok((info, sources, configs))
                    },
                )
                .optional()
                .map_err(q("read revision"))?;
            let Some((info, sources, configs)) = row else {
                return Ok(None);
            };
            let bad = |e: String| StoreError::Query {
                op: "read revision",
                source: rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    e.into(),
                ),
            };
            Ok(Some(Revision {
                content: RevisionContent {
                    hash: info.hash.clone(),
                    sources: serde_json::from_str(&sources).map_err(|e| bad(e.to_string()))?,
                    configs: decode_configs(&configs).map_err(bad)?,
                    images: info.images.clone(),
                    secrets: info.secrets.clone(),
                },
                info,
            }))
        })
    }

    // ----- node conditions ---------------------------------------------------------------

    /// Every node's recorded conditions.
    ///
    /// # Errors
    /// Query failure.
    pub fn node_conditions(
        &self,
    ) -> Result<std::collections::BTreeMap<String, NodeCondition>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT node, cordoned, draining, drained, not_ready_since_ms, reason FROM node_conditions")
                .map_err(q("read node conditions"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        NodeCondition {
                            cordoned: r.get(1)?,
                            draining: r.get(2)?,
                            drained: r.get(3)?,
                            not_ready_since_ms: r.get(4)?,
                            reason: r.get(5)?,
                            hot: None,
                        },
                    ))
                })
                .map_err(q("read node conditions"))?;
            rows.collect::<Result<_, _>>().map_err(q("read node conditions"))
        })
        .and_then(|mut conditions: std::collections::BTreeMap<String, NodeCondition>| {
            for (node, h) in self.hot_nodes()? {
                conditions.entry(node).or_default().hot = Some(h.why);
            }
            Ok(conditions)
        })
    }

    /// Moves one node's [`Schedule`] by `t`, guarded ([`Schedule::apply`]), in one transaction;
    /// returns (before, after). Writes nothing when nothing changes (so `cordon` twice is one
    /// change) or the guard refuses.
    ///
    /// # Errors
    /// [`StoreError::Condition`] when the guard refuses; query failure.
    pub fn transition_node(
        &self,
        node: &str,
        now: i64,
        t: Transition,
    ) -> Result<(NodeCondition, NodeCondition), StoreError> {
        let (before, after) = self.modify_node_condition(node, now, |c| {
            c.apply(t).map_err(|source| StoreError::Condition {
                node: node.to_string(),
                source,
            })
        })?;
        // Every explicit command is the newest word on the node's schedule, whether or not it
        // changed it here (a drain run again after an uncordon made elsewhere must win), and
        // its time is after every change this state knows (clocks of machines differ).
        self.stamp_schedule(node, now)?;
        Ok((before, after))
    }

    /// Marks `node`'s schedule as set at `now`, or just after its last known change when that is
    /// later (another machine's clock ahead of ours).
    fn stamp_schedule(&self, node: &str, now: i64) -> Result<(), StoreError> {
        self.write("record when a node's schedule changed", |tx| {
            tx.execute(
                "UPDATE node_conditions SET schedule_ms = MAX(?2, schedule_ms + 1) WHERE node = ?1",
                params![node, now],
            )
            .map_err(q("record when a node's schedule changed"))?;
            Ok(())
        })
    }

    fn set_schedule_ms(&self, node: &str, at: i64) -> Result<(), StoreError> {
        self.write("record when a node's schedule changed", |tx| {
            tx.execute(
                "UPDATE node_conditions SET schedule_ms = ?2 WHERE node = ?1",
                params![node, at],
            )
            .map_err(q("record when a node's schedule changed"))?;
            Ok(())
        })
    }

    /// Learns every node condition the nodes record that is newer than this state's (see
    /// [`Store::conditions_with_marks`]), before an explicit command changes one: the command
    /// then acts on, and stamps after, the newest condition.
    ///
    /// # Errors
    /// Query failure.
    pub fn learn_marks(
        &self,
        marks: &std::collections::BTreeMap<String, crate::condition::Mark>,
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (_, r) = self.conditions_with_marks(marks, actor)?;
        for (node, mark) in &r.learn {
            self.learn_schedule(node, mark, now)?;
        }
        Ok(())
    }

    /// When each node's schedule last changed through this state (ms; absent or 0: never).
    ///
    /// # Errors
    /// Query failure.
    pub fn schedule_times(&self) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT node, schedule_ms FROM node_conditions")
                .map_err(q("read schedule times"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(q("read schedule times"))?;
            rows.collect::<Result<_, _>>()
                .map_err(q("read schedule times"))
        })
    }

    /// The node conditions with what the nodes record merged in (`marks`, see
    /// [`crate::condition::reconcile_marks`]: the newer change wins), and what the state and
    /// the nodes should learn from each other. Writes nothing.
    ///
    /// # Errors
    /// Query failure.
    pub fn conditions_with_marks(
        &self,
        marks: &std::collections::BTreeMap<String, crate::condition::Mark>,
        actor: &str,
    ) -> Result<
        (
            std::collections::BTreeMap<String, NodeCondition>,
            crate::condition::Reconciled,
        ),
        StoreError,
    > {
        let mut conditions = self.node_conditions()?;
        let schedules = conditions
            .iter()
            .map(|(n, c)| (n.clone(), c.schedule()))
            .collect();
        let r =
            crate::condition::reconcile_marks(&schedules, &self.schedule_times()?, marks, actor);
        for (node, m) in &r.learn {
            conditions
                .entry(node.clone())
                .or_default()
                .set_schedule(m.schedule);
        }
        Ok((conditions, r))
    }

    /// Takes a node's schedule as the nodes record it (`mark`, set through another state file):
    /// the flags become `mark.schedule` (readiness kept), its time `mark.since_ms`, with a
    /// `learned` event. Not guarded: the change was made, elsewhere.
    ///
    /// # Errors
    /// Query failure.
    pub fn learn_schedule(
        &self,
        node: &str,
        mark: &crate::condition::Mark,
        now: i64,
    ) -> Result<(), StoreError> {
        let (before, _) = self.modify_node_condition(node, now, |c| {
            c.set_schedule(mark.schedule);
            Ok(())
        })?;
        self.set_schedule_ms(node, mark.since_ms)?;
        let _ = self.record_event(
            now,
            "node",
            "learned",
            Some(node),
            None,
            &format!(
                "{} → {} (set by {} at {}, as the nodes record it)",
                before.schedule(),
                mark.schedule,
                mark.by,
                format_ms(mark.since_ms)
            ),
        );
        Ok(())
    }

    /// Changes one node's conditions with `f`; returns (before, after). Writes nothing when `f`
    /// changes nothing. For the readiness record (`not_ready_since_ms`, `reason`); the
    /// scheduling condition changes through [`Store::transition_node`].
    ///
    /// # Errors
    /// Query failure.
    pub fn update_node_condition(
        &self,
        node: &str,
        now: i64,
        f: impl FnOnce(&mut NodeCondition),
    ) -> Result<(NodeCondition, NodeCondition), StoreError> {
        self.modify_node_condition(node, now, |c| {
            f(c);
            Ok(())
        })
    }

    fn modify_node_condition(
        &self,
        node: &str,
        now: i64,
        f: impl FnOnce(&mut NodeCondition) -> Result<(), StoreError>,
    ) -> Result<(NodeCondition, NodeCondition), StoreError> {
        self.write("update node condition", |tx| {
            let before = tx
                .query_row(
                    "SELECT cordoned, draining, drained, not_ready_since_ms, reason FROM node_conditions WHERE node = ?1",
                    [node],
                    |r| {
                        Ok(NodeCondition {
                            cordoned: r.get(0)?,
                            draining: r.get(1)?,
                            drained: r.get(2)?,
                            not_ready_since_ms: r.get(3)?,
                            reason: r.get(4)?,
                            hot: None,
                        })
                    },
                )
                .optional()
                .map_err(q("read node condition"))?
                .unwrap_or_default();
            let mut after = before.clone();
            f(&mut after)?;
            if after != before {
                tx.execute(
                    "INSERT INTO node_conditions (node, cordoned, draining, drained, not_ready_since_ms, reason, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(node) DO UPDATE SET cordoned = ?2, draining = ?3, drained = ?4,
                       not_ready_since_ms = ?5, reason = ?6, updated_ms = ?7",
                    params![node, after.cordoned, after.draining, after.drained, after.not_ready_since_ms, after.reason, now],
                )
                .map_err(q("write node condition"))?;
            }
            Ok((before, after))
        })
    }

    // ----- plugs and port leases ---------------------------------------------------------

    /// Every plug instance.
    ///
    /// # Errors
    /// Query failure.
    pub fn plugs(&self) -> Result<Vec<PlugRecord>, StoreError> {
        self.read(read_plugs)
    }

    /// One plug.
    ///
    /// # Errors
    /// [`StoreError::NoPlug`].
    pub fn plug(&self, id: &str) -> Result<PlugRecord, StoreError> {
        self.plugs()?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| StoreError::NoPlug(id.to_string()))
    }

    /// Every port lease as (node, port, plug).
    ///
    /// # Errors
    /// Query failure.
    pub fn port_leases(&self) -> Result<Vec<(String, u16, String)>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT node, port, plug FROM port_leases ORDER BY node, port")
                .map_err(q("read port leases"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(q("read port leases"))?;
            rows.collect::<Result<_, _>>()
                .map_err(q("read port leases"))
        })
    }

    /// Reads the plugs and leases, lets `decide` pick (pure), and records what it returns — all
    /// in one transaction, so concurrent creators never overfill a node or lease a port twice.
    ///
    /// # Errors
    /// Whatever `decide` returns, or query failure (including a port taken, which cannot happen
    /// when `decide` honours the leases it was shown).
    pub fn create_plug_with<E: From<StoreError>>(
        &self,
        decide: impl FnOnce(&[PlugRecord], &[(String, u16, String)]) -> Result<PlugRecord, E>,
    ) -> Result<PlugRecord, E> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| E::from(q("create plug")(e)))?;
        let plugs = read_plugs(&tx).map_err(E::from)?;
        let leases = read_leases(&tx).map_err(E::from)?;
        let plug = decide(&plugs, &leases)?;
        insert_plug(&tx, &plug).map_err(E::from)?;
        tx.commit().map_err(|e| E::from(q("create plug")(e)))?;
        Ok(plug)
    }

    /// Starts a stopped or evicted plug again, in one transaction: reads the plugs and leases,
    /// lets `decide` (pure) pick its node and port, and records it `pending` there with
    /// `now` as its last activity, leasing the new port when it moves (the old lease stays until
    /// [`Store::release_port`] is called for it after the old container is gone). Returns the
    /// record before and after; a plug that already wants to run is returned unchanged (twice)
    /// without calling `decide`.
    ///
    /// # Errors
    /// [`StoreError::NoPlug`], whatever `decide` returns, or query failure.
    pub fn restart_plug_with<E: From<StoreError>>(
        &self,
        id: &str,
        now: i64,
        decide: impl FnOnce(
            &PlugRecord,
            &[PlugRecord],
            &[(String, u16, String)],
        ) -> Result<(String, u16), E>,
    ) -> Result<(PlugRecord, PlugRecord), E> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| E::from(q("restart plug")(e)))?;
        let plugs = read_plugs(&tx).map_err(E::from)?;
        let Some(before) = plugs.iter().find(|p| p.id == id).cloned() else {
            return Err(E::from(StoreError::NoPlug(id.to_string())));
        };
        if before.state.wants_running() {
            return Ok((before.clone(), before));
        }
        let leases = read_leases(&tx).map_err(E::from)?;
        let (node, port) = decide(&before, &plugs, &leases)?;
        lease_port(&tx, &node, port, id).map_err(E::from)?;
        tx.execute(
            "UPDATE plugs SET node = ?2, host_port = ?3, state = ?4, message = NULL, \
             last_activity_ms = ?5 WHERE id = ?1",
            params![id, node, port, PlugState::Pending.as_str(), now],
        )
        .map_err(|e| E::from(q("restart plug")(e)))?;
        tx.commit().map_err(|e| E::from(q("restart plug")(e)))?;
        let after = PlugRecord {
            node,
            host_port: port,
            state: PlugState::Pending,
            message: None,
            last_activity_ms: now,
            ..before.clone()
        };
        Ok((before, after))
    }

    /// Moves a plug to `node`/`port` (drain, node loss): leases the new port, keeps the old
    /// lease until [`Store::release_port`] is called for it after the old container is gone.
    ///
    /// # Errors
    /// [`StoreError::PortTaken`], [`StoreError::NoPlug`].
    pub fn move_plug(&self, id: &str, node: &str, port: u16) -> Result<(), StoreError> {
        self.write("move plug", |tx| {
            lease_port(tx, node, port, id)?;
            let n = tx
                .execute(
                    "UPDATE plugs SET node = ?2, host_port = ?3 WHERE id = ?1",
                    params![id, node, port],
                )
                .map_err(q("move plug"))?;
            if n == 0 {
                return Err(StoreError::NoPlug(id.to_string()));
            }
            Ok(())
        })
    }

    /// Releases a port lease (when no container of that plug holds it any more).
    ///
    /// # Errors
    /// Query failure.
    pub fn release_port(&self, node: &str, port: u16, plug: &str) -> Result<(), StoreError> {
        self.write("release port", |tx| {
            tx.execute(
                "DELETE FROM port_leases WHERE node = ?1 AND port = ?2 AND plug = ?3",
                params![node, port, plug],
            )
            .map_err(q("release port"))?;
            Ok(())
        })
    }

    /// Sets a plug's state (and message).
    ///
    /// # Errors
    /// [`StoreError::NoPlug`].
    pub fn set_plug_state(
        &self,
        id: &str,
        state: PlugState,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write("set plug state", |tx| {
            let n = tx
                .execute(
                    "UPDATE plugs SET state = ?2, message = ?3 WHERE id = ?1",
                    params![id, state.as_str(), message],
                )
                .map_err(q("set plug state"))?;
            if n == 0 {
                return Err(StoreError::NoPlug(id.to_string()));
            }
            Ok(())
        })
    }

    /// Records activity on a plug.
    ///
    /// # Errors
    /// [`StoreError::NoPlug`].
    pub fn touch_plug(&self, id: &str, now: i64) -> Result<(), StoreError> {
        self.write("touch plug", |tx| {
            let n = tx
                .execute(
                    "UPDATE plugs SET last_activity_ms = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map_err(q("touch plug"))?;
            if n == 0 {
                return Err(StoreError::NoPlug(id.to_string()));
            }
            Ok(())
        })
    }

    /// Deletes a plug and every port lease it holds.
    ///
    /// # Errors
    /// [`StoreError::NoPlug`].
    pub fn delete_plug(&self, id: &str) -> Result<(), StoreError> {
        self.write("delete plug", |tx| {
            let n = tx
                .execute("DELETE FROM plugs WHERE id = ?1", [id])
                .map_err(q("delete plug"))?;
            tx.execute("DELETE FROM port_leases WHERE plug = ?1", [id])
                .map_err(q("delete port leases"))?;
            if n == 0 {
                return Err(StoreError::NoPlug(id.to_string()));
            }
            let now = now_ms();
            tx.execute(
                "DELETE FROM plug_tombstones WHERE deleted_ms < ?1",
                [now - TOMBSTONE_KEEP_MS],
            )
            .map_err(q("prune plug tombstones"))?;
            tx.execute(
                "INSERT OR REPLACE INTO plug_tombstones (id, deleted_ms) VALUES (?1, ?2)",
                params![id, now],
            )
            .map_err(q("record plug deletion"))?;
            Ok(())
        })
    }

    /// Ids of plugs deleted within [`TOMBSTONE_KEEP_MS`]: their containers are removed, never
    /// adopted.
    ///
    /// # Errors
    /// Query failure.
    pub fn tombstones(&self) -> Result<BTreeSet<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT id FROM plug_tombstones WHERE deleted_ms >= ?1")
                .map_err(q("read plug tombstones"))?;
            let rows = stmt
                .query_map([now_ms() - TOMBSTONE_KEEP_MS], |r| r.get(0))
                .map_err(q("read plug tombstones"))?;
            rows.collect::<Result<_, _>>()
                .map_err(q("read plug tombstones"))
        })
    }

    /// Records plugs found running (or stopped) on the nodes that this store did not know, with
    /// their port leases and an `adopted` event each, in one transaction. A plug recorded
    /// meanwhile (by another command) is left as it is. Returns the plugs recorded.
    ///
    /// # Errors
    /// A port already leased to another plug on that node; query failure.
    pub fn adopt_plugs(
        &self,
        plugs: &[PlugRecord],
        actor: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.write("adopt plugs", |tx| {
            let mut adopted = Vec::new();
            for p in plugs {
                let known: bool = tx
                    .query_row("SELECT 1 FROM plugs WHERE id = ?1", [&p.id], |_| Ok(true))
                    .optional()
                    .map_err(q("read plug"))?
                    .unwrap_or(false);
                if known {
                    continue;
                }
                insert_plug(tx, p)?;
                tx.execute(
                    "INSERT INTO events (at_ms, actor, action, node, object, message) VALUES (?1, ?2, 'adopted', ?3, ?4, ?5)",
                    params![
                        now,
                        actor,
                        p.node,
                        format!("plug {}", p.id),
                        format!(
                            "found on the node, unknown to this state: class {}, owner {}, port {} ({})",
                            p.class,
                            p.owner,
                            p.host_port,
                            p.state.as_str()
                        )
                    ],
                )
                .map_err(q("record event"))?;
                adopted.push(p.id.clone());
            }
            Ok(adopted)
        })
    }

    // ----- last-known replica placement --------------------------------------------------

    /// Where each service replica was last seen or put: lets a reconcile keep the replicas of
    /// an unreachable node where they are instead of treating them as absent.
    ///
    /// # Errors
    /// Query failure.
    pub fn replica_nodes(&self) -> Result<BTreeMap<(String, u32), String>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT service, replica, node FROM replicas")
                .map_err(q("read replicas"))?;
            let rows = stmt
                .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
                .map_err(q("read replicas"))?;
            rows.collect::<Result<_, _>>().map_err(q("read replicas"))
        })
    }

    /// The digest recorded for each image tag (`""`: its registry could not be asked).
    ///
    /// # Errors
    /// Query failure.
    pub fn image_digests(&self) -> Result<BTreeMap<String, String>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT image, digest FROM image_digests")
                .map_err(q("read image digests"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(q("read image digests"))?;
            rows.collect::<Result<_, _>>()
                .map_err(q("read image digests"))
        })
    }

    /// Records that `image` runs as `digest` fleet-wide from now on (`""`: by its tag).
    ///
    /// # Errors
    /// Query failure.
    pub fn record_image_digest(
        &self,
        image: &str,
        digest: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write("record image digest", |tx| {
            tx.execute(
                "INSERT INTO image_digests (image, digest, resolved_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (image) DO UPDATE SET digest = ?2, resolved_ms = ?3",
                rusqlite::params![image, digest, now],
            )
            .map_err(q("record image digest"))?;
            Ok(())
        })
    }

    /// Replaces the recorded replica placement.
    ///
    /// # Errors
    /// Query failure.
    pub fn set_replica_nodes(
        &self,
        nodes: &BTreeMap<(String, u32), String>,
    ) -> Result<(), StoreError> {
        self.write("record replicas", |tx| {
            tx.execute("DELETE FROM replicas", [])
                .map_err(q("record replicas"))?;
            for ((svc, replica), node) in nodes {
                tx.execute(
                    "INSERT INTO replicas (service, replica, node) VALUES (?1, ?2, ?3)",
                    params![svc, replica, node],
                )
                .map_err(q("record replicas"))?;
            }
            Ok(())
        })
    }

    // ----- events ------------------------------------------------------------------------

    /// Appends to the event log.
    ///
    /// # Errors
    /// Query failure.
    pub fn record_event(
        &self,
        now: i64,
        actor: &str,
        action: &str,
        node: Option<&str>,
        object: Option<&str>,
        message: &str,
    ) -> Result<(), StoreError> {
        self.write("record event", |tx| {
            tx.execute(
                "INSERT INTO events (at_ms, actor, action, node, object, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now, actor, action, node, object, message],
            )
            .map_err(q("record event"))?;
            Ok(())
        })
    }

    /// The newest `limit` events, oldest first.
    ///
    /// # Errors
    /// Query failure.
    pub fn events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, at_ms, actor, action, node, object, message FROM events
                     ORDER BY id DESC LIMIT ?1",
                )
                .map_err(q("read events"))?;
            let rows = stmt
                .query_map([limit as i64], event_row)
                .map_err(q("read events"))?;
            let mut v: Vec<EventRecord> =
                rows.collect::<Result<_, _>>().map_err(q("read events"))?;
            v.reverse();
            Ok(v)
        })
    }

    /// The events at or after `since_ms` with an id above `after_id` (0: all), on `node` when
    /// given, oldest first (by id, the order they were recorded in).
    ///
    /// # Errors
    /// Query failure.
    pub fn events_since(
        &self,
        since_ms: i64,
        after_id: i64,
        node: Option<&str>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, at_ms, actor, action, node, object, message FROM events
                     WHERE at_ms >= ?1 AND id > ?2 AND (?3 IS NULL OR node = ?3)
                     ORDER BY id",
                )
                .map_err(q("read events"))?;
            let rows = stmt
                .query_map(params![since_ms, after_id, node], event_row)
                .map_err(q("read events"))?;
            rows.collect::<Result<_, _>>().map_err(q("read events"))
        })
    }

    /// Deletes the events older than `before_ms` (the event log's retention); returns how many.
    ///
    /// # Errors
    /// Query failure.
    pub fn prune_events(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.write("prune events", |tx| {
            tx.execute("DELETE FROM events WHERE at_ms < ?1", [before_ms])
                .map_err(q("prune events"))
        })
    }

    // ----- intents -----------------------------------------------------------------------

    /// Hands an intent to the controller; returns its id. Answered intents older than a day
    /// are deleted on the way.
    ///
    /// # Errors
    /// Query failure.
    pub fn submit_intent(&self, kind: &str, payload: &str, now: i64) -> Result<i64, StoreError> {
        self.write("submit intent", |tx| {
            // Answers are read by the command that waits for them, within minutes; a day on,
            // nobody reads them and the table stays small.
            tx.execute(
                "DELETE FROM intents WHERE state IN ('done', 'failed') AND done_ms < ?1",
                [now - INTENT_KEEP_MS],
            )
            .map_err(q("prune intents"))?;
            tx.execute(
                "INSERT INTO intents (at_ms, kind, payload, state) VALUES (?1, ?2, ?3, 'pending')",
                params![now, kind, payload],
            )
            .map_err(q("submit intent"))?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Claims the oldest pending intent (marks it `running`).
    ///
    /// # Errors
    /// Query failure.
    pub fn claim_intent(&self) -> Result<Option<Intent>, StoreError> {
        self.write("claim intent", |tx| {
            let row = tx
                .query_row(
                    "SELECT id, kind, payload, at_ms FROM intents WHERE state = 'pending' ORDER BY id LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?)),
                )
                .optional()
                .map_err(q("claim intent"))?;
            let Some((id, kind, payload, at_ms)) = row else {
                return Ok(None);
            };
            tx.execute("UPDATE intents SET state = 'running' WHERE id = ?1", [id])
                .map_err(q("claim intent"))?;
            Ok(Some(Intent {
                id,
                at_ms,
                kind,
                payload,
                state: IntentState::Running,
                result: None,
            }))
        })
    }

    /// Records an intent's outcome (`done` or `failed`) or progress (`running` with a result so
    /// far).
    ///
    /// # Errors
    /// Query failure.
    pub fn finish_intent(
        &self,
        id: i64,
        state: IntentState,
        result: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write("finish intent", |tx| {
            tx.execute(
                "UPDATE intents SET state = ?2, result = ?3, done_ms = ?4 WHERE id = ?1",
                params![id, state.as_str(), result, now],
            )
            .map_err(q("finish intent"))?;
            Ok(())
        })
    }

    /// One intent.
    ///
    /// # Errors
    /// Query failure.
    pub fn intent(&self, id: i64) -> Result<Option<Intent>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT id, kind, payload, state, result, at_ms FROM intents WHERE id = ?1",
                [id],
                |r| {
                    Ok(Intent {
                        id: r.get(0)?,
                        at_ms: r.get(5)?,
                        kind: r.get(1)?,
                        payload: r.get(2)?,
                        state: r.get(3)?,
                        result: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(q("read intent"))
        })
    }
}

fn read_lease(c: &Connection) -> Result<Option<LeaseInfo>, StoreError> {
    c.query_row(
        "SELECT holder, kind, api, acquired_ms, expires_ms, token FROM lease WHERE name = ?1",
        [FLEET_LEASE],
        |r| {
            Ok(LeaseInfo {
                holder: r.get(0)?,
                kind: r.get(1)?,
                api: r.get(2)?,
                acquired_ms: r.get(3)?,
                expires_ms: r.get(4)?,
                token: r.get(5)?,
            })
        },
    )
    .optional()
    .map_err(q("read lease"))
}

fn check_fence(c: &Connection, token: i64) -> Result<(), StoreError> {
    let current = read_lease(c)?.map_or(0, |l| l.token);
    if current != token {
        return Err(StoreError::Fenced {
            ours: token,
            current,
        });
    }
    Ok(())
}

fn read_plugs(c: &Connection) -> Result<Vec<PlugRecord>, StoreError> {
    let mut stmt = c
        .prepare(
            "SELECT id, class, owner, node, host_port, state, created_ms, last_activity_ms, message
             FROM plugs ORDER BY created_ms, id",
        )
        .map_err(q("read plugs"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(PlugRecord {
                id: r.get(0)?,
                class: r.get(1)?,
                owner: r.get(2)?,
                node: r.get(3)?,
                host_port: r.get(4)?,
                state: PlugState::parse(&r.get::<_, String>(5)?),
                created_ms: r.get(6)?,
                last_activity_ms: r.get(7)?,
                message: r.get(8)?,
            })
        })
        .map_err(q("read plugs"))?;
    rows.collect::<Result<_, _>>().map_err(q("read plugs"))
}

fn read_leases(c: &Connection) -> Result<Vec<(String, u16, String)>, StoreError> {
    let mut stmt = c
        .prepare("SELECT node, port, plug FROM port_leases")
        .map_err(q("read port leases"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(q("read port leases"))?;
    rows.collect::<Result<_, _>>()
        .map_err(q("read port leases"))
}

/// Leases `port` on `node` to `plug`; port 0 (a plug that publishes none) leases nothing.
fn lease_port(c: &Connection, node: &str, port: u16, plug: &str) -> Result<(), StoreError> {
    if port == 0 {
        return Ok(());
    }
    let holder: Option<String> = c
        .query_row(
            "SELECT plug FROM port_leases WHERE node = ?1 AND port = ?2",
            params![node, port],
            |r| r.get(0),
        )
        .optional()
        .map_err(q("read port lease"))?;
    match holder {
        Some(h) if h == plug => Ok(()),
        Some(h) => Err(StoreError::PortTaken {
            node: node.to_string(),
            port,
            holder: h,
        }),
        None => c
            .execute(
                "INSERT INTO port_leases (node, port, plug) VALUES (?1, ?2, ?3)",
                params![node, port, plug],
            )
            .map(|_| ())
            .map_err(q("lease port")),
    }
}

fn insert_plug(c: &Connection, p: &PlugRecord) -> Result<(), StoreError> {
    lease_port(c, &p.node, p.host_port, &p.id)?;
    c.execute(
        "INSERT INTO plugs (id, class, owner, node, host_port, state, created_ms, last_activity_ms, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![p.id, p.class, p.owner, p.node, p.host_port, p.state.as_str(), p.created_ms, p.last_activity_ms, p.message],
    )
    .map_err(q("insert plug"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_since_filters_by_time_id_and_node_and_prune_deletes_old_ones() {
        let s = Store::in_memory().unwrap();
        s.record_event(1_000, "apply", "create", Some("a"), Some("f-web-0-1"), "x")
            .unwrap();
        s.record_event(2_000, "drain", "drain", Some("b"), None, "y")
            .unwrap();
        s.record_event(3_000, "plug", "create", Some("a"), Some("f-plug-p1"), "z")
            .unwrap();
        let all = s.events_since(0, 0, None).unwrap();
        assert_eq!(
            all.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
            [1_000, 2_000, 3_000]
        );
        let recent = s.events_since(2_000, 0, None).unwrap();
        assert_eq!(recent.len(), 2);
        let on_a = s.events_since(0, 0, Some("a")).unwrap();
        assert_eq!(
            on_a.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["create", "create"]
        );
        let newer = s.events_since(0, all[1].id, None).unwrap();
        assert_eq!(newer, vec![all[2].clone()]);
        assert_eq!(s.prune_events(2_500).unwrap(), 2);
        assert_eq!(s.events_since(0, 0, None).unwrap(), vec![all[2].clone()]);
        assert_eq!(s.prune_events(2_500).unwrap(), 0);
    }

    /// Many processes (here threads with their own connections) opening one fresh state file at
    /// once all get a store: switching the file to WAL waits for the others instead of failing
    /// with "database is locked" (seen with twenty concurrent `fleetctl plug create`).
    #[test]
    fn twenty_concurrent_opens_of_a_fresh_file_all_succeed() {
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("state-{round}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(20));
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    let path = path.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(&path).map(|_| ())
                    })
                })
                .collect();
            for h in handles {
                if let Err(e) = h.join().unwrap() {
                    panic!("round {round}: {e}");
                }
            }
        }
    }

    #[test]
    fn lease_is_exclusive_until_expiry_and_tokens_grow() {
        let s = Store::in_memory().unwrap();
        let ttl = Duration::from_secs(30);
        let a = s
            .try_acquire_lease("apply A", "apply", None, ttl, 1_000)
            .unwrap();
        let err = s
            .try_acquire_lease("apply B", "apply", None, ttl, 2_000)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("fleet is locked by apply A since 1970-01-01T00:00:01Z"),
            "{err}"
        );
        // After expiry B gets it, with a higher token; A's writes are fenced off.
        let b = s
            .try_acquire_lease("apply B", "apply", None, ttl, 40_000)
            .unwrap();
        assert!(b.token > a.token);
        assert!(matches!(
            s.renew_lease(a.token, ttl, 41_000),
            Err(StoreError::Fenced { .. })
        ));
        assert!(s.record_applied(a.token, "A", "h", &[], 41_000).is_err());
        s.record_applied(b.token, "B", "h", &[], 41_000).unwrap();
        // Releasing makes it free at once.
        s.release_lease(b.token).unwrap();
        s.try_acquire_lease("apply C", "apply", None, ttl, 41_001)
            .unwrap();
    }

    fn content(hash: &str, digest: &str, secret: &str) -> RevisionContent {
        RevisionContent {
            hash: hash.into(),
            sources: vec![Source {
                name: "fleet.yaml".into(),
                text: format!("# {hash}"),
            }],
            configs: [("conf/app.conf".to_string(), vec![0, 159, 146, 150])].into(),
            images: [("nginx:1.27".to_string(), digest.to_string())].into(),
            secrets: [("db-password".to_string(), secret.to_string())].into(),
        }
    }

    #[test]
    fn revisions_are_numbered_from_one_and_an_identical_one_is_not_recorded_again() {
        let s = Store::in_memory().unwrap();
        let v1 = content("h1", "sha256:a", "s1");
        assert_eq!(
            s.record_revision(None, "A", &v1, "first", None, 1_000)
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            s.record_revision(None, "A", &v1, "again", None, 2_000)
                .unwrap(),
            None,
            "identical to the last revision"
        );
        // A moved digest or a changed secret is a new revision, even with the same manifests.
        let moved = content("h1", "sha256:b", "s1");
        assert_eq!(
            s.record_revision(None, "B", &moved, "digest", None, 3_000)
                .unwrap(),
            Some(2)
        );
        let secret = content("h1", "sha256:b", "s2");
        assert_eq!(
            s.record_revision(None, "B", &secret, "secret", None, 4_000)
                .unwrap(),
            Some(3)
        );
        // Back to v1: identical to revision 1 but not to the last one.
        assert_eq!(
            s.record_revision(None, "C", &v1, "rollback", Some(1), 5_000)
                .unwrap(),
            Some(4)
        );
        let all = s.revisions().unwrap();
        assert_eq!(
            all.iter().map(|r| r.number).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(all[3].rollback_of, Some(1));
        assert_eq!(all[3].actor, "C");
        let back = s.revision(4).unwrap().unwrap();
        assert_eq!(
            back.content, v1,
            "configs (any bytes), digests and hashes round-trip"
        );
        assert!(s.revision(5).unwrap().is_none());
    }

    #[test]
    fn a_revision_is_fenced_by_the_lease() {
        let s = Store::in_memory().unwrap();
        let ttl = Duration::from_secs(30);
        let a = s
            .try_acquire_lease("apply A", "apply", None, ttl, 0)
            .unwrap();
        let v1 = content("h1", "", "");
        assert!(matches!(
            s.record_revision(Some(a.token + 1), "A", &v1, "", None, 1),
            Err(StoreError::Fenced { .. })
        ));
        assert!(s.revisions().unwrap().is_empty());
        s.record_revision(Some(a.token), "A", &v1, "", None, 1)
            .unwrap();
        assert_eq!(s.revisions().unwrap().len(), 1);
    }

    /// A state file written before revisions existed opens, keeps what it applied, and numbers
    /// its first revision 1.
    #[test]
    fn a_store_from_before_revisions_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            let before = MIGRATIONS.len() - 1;
            for m in &MIGRATIONS[..before] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", before as i64)
                .unwrap();
            conn.execute(
                "INSERT INTO applied (at_ms, actor, hash, sources) VALUES (7, 'old', 'h0', '[]')",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let (sources, at, hash) = s.last_applied().unwrap().unwrap();
        assert_eq!((sources.len(), at, hash.as_str()), (0, 7, "h0"));
        assert!(s.revisions().unwrap().is_empty());
        assert_eq!(
            s.record_revision(None, "new", &content("h1", "", ""), "", None, 8)
                .unwrap(),
            Some(1)
        );
        drop(s);
        // Opening again runs no migration twice.
        assert_eq!(Store::open(&path).unwrap().revisions().unwrap().len(), 1);
    }

    #[test]
    fn ports_are_leased_once_per_node() {
        let s = Store::in_memory().unwrap();
        let plug = |id: &str, node: &str, port| PlugRecord {
            id: id.into(),
            class: "c".into(),
            owner: "o".into(),
            node: node.into(),
            host_port: port,
            state: PlugState::Pending,
            created_ms: 0,
            last_activity_ms: 0,
            message: None,
        };
        s.create_plug_with::<StoreError>(|_, _| Ok(plug("a", "node1", 51000)))
            .unwrap();
        s.create_plug_with::<StoreError>(|_, _| Ok(plug("b", "node2", 51000)))
            .unwrap();
        let err = s
            .create_plug_with::<StoreError>(|_, _| Ok(plug("c", "node1", 51000)))
            .unwrap_err();
        assert!(matches!(err, StoreError::PortTaken { .. }), "{err}");
        assert_eq!(s.plugs().unwrap().len(), 2);
        // Moving keeps the old lease until released.
        s.move_plug("a", "node2", 51001).unwrap();
        assert_eq!(s.port_leases().unwrap().len(), 3);
        s.release_port("node1", 51000, "a").unwrap();
        assert_eq!(s.port_leases().unwrap().len(), 2);
        s.delete_plug("a").unwrap();
        assert_eq!(s.port_leases().unwrap().len(), 1);
    }

    #[test]
    fn node_conditions_change_only_when_different() {
        let s = Store::in_memory().unwrap();
        let (before, after) = s.transition_node("node2", 1, Transition::Cordon).unwrap();
        assert_eq!(
            (before.schedule(), after.schedule()),
            (Schedule::Schedulable, Schedule::Cordoned)
        );
        let (before, after) = s.transition_node("node2", 2, Transition::Cordon).unwrap();
        assert_eq!(before, after);
        assert_eq!(
            s.node_conditions().unwrap()["node2"].schedule(),
            Schedule::Cordoned
        );
    }

    #[test]
    fn a_refused_transition_writes_nothing() {
        let s = Store::in_memory().unwrap();
        s.transition_node("node2", 1, Transition::StartDrain)
            .unwrap();
        s.transition_node("node2", 2, Transition::Uncordon).unwrap();
        let e = s
            .transition_node("node2", 3, Transition::FinishDrain)
            .unwrap_err();
        assert!(matches!(e, StoreError::Condition { .. }), "{e}");
        assert_eq!(
            s.node_conditions().unwrap()["node2"].schedule(),
            Schedule::Schedulable
        );
        // The stored flags keep their historical shape.
        let (_, after) = s
            .transition_node("node2", 4, Transition::StartDrain)
            .unwrap();
        assert!(after.cordoned && after.draining && !after.drained);
    }

    #[test]
    fn store_is_bound_to_one_fleet() {
        let s = Store::in_memory().unwrap();
        s.bind_fleet("aims").unwrap();
        s.bind_fleet("aims").unwrap();
        assert!(matches!(
            s.bind_fleet("other"),
            Err(StoreError::OtherFleet { .. })
        ));
    }

    #[test]
    fn answered_intents_are_kept_a_day_and_pending_ones_until_claimed() {
        let s = Store::in_memory().unwrap();
        let day = INTENT_KEEP_MS;
        let answered = s.submit_intent("plug-touch", "{}", 0).unwrap();
        s.claim_intent().unwrap().unwrap();
        s.finish_intent(answered, IntentState::Done, "{}", 1_000)
            .unwrap();
        let waiting = s.submit_intent("plug-touch", "{}", 2_000).unwrap();
        s.submit_intent("plug-touch", "{}", day).unwrap();
        assert!(s.intent(answered).unwrap().is_some(), "less than a day old");
        s.submit_intent("plug-touch", "{}", day + 1_001).unwrap();
        assert!(s.intent(answered).unwrap().is_none());
        assert_eq!(
            s.intent(waiting).unwrap().unwrap().state,
            IntentState::Pending
        );
    }

    /// Review finding: an explicit command is the newest word on a node's schedule even when it
    /// changes nothing here, and is stamped after every change this state knows (another
    /// machine's clock may be ahead).
    #[test]
    fn every_explicit_transition_is_stamped_after_the_last_known_change() {
        use crate::condition::{Mark, Schedule, Transition};
        let s = Store::in_memory().unwrap();
        s.transition_node("n", 100, Transition::Cordon).unwrap();
        assert_eq!(s.schedule_times().unwrap()["n"], 100);
        s.transition_node("n", 200, Transition::Cordon).unwrap();
        assert_eq!(
            s.schedule_times().unwrap()["n"],
            200,
            "unchanged, still stamped"
        );
        let ahead = Mark {
            schedule: Schedule::Schedulable,
            since_ms: 5_000,
            by: "b".into(),
        };
        s.learn_schedule("n", &ahead, 300).unwrap();
        s.transition_node("n", 400, Transition::Cordon).unwrap();
        assert_eq!(s.schedule_times().unwrap()["n"], 5_001);
        assert_eq!(
            s.node_conditions().unwrap()["n"].schedule(),
            Schedule::Cordoned
        );
    }
}
