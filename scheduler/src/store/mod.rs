//! The scheduler's state in SQL: one set of store methods over SQLite (embedded default) or
//! PostgreSQL (production), chosen by the database URL.
//!
//! Every method is written once; the `on_pool!`/`in_tx!` macros expand it for both drivers.
//! Queries use `$N` placeholders, which both drivers accept, and are always parameterised.
//! Methods are named `<resource>_<verb>`.

mod audit;
mod auth;
mod batch;
mod events;
mod identity;
mod images;
mod instances;
mod keys;
mod network;
pub(crate) mod network_desired;
mod nodes;
mod placements;
mod quotas;
mod snapshots;
mod volumes;

pub use audit::{AuditFilter, AuditRecord, NewAuditEntry};
pub use auth::NewJoinToken;
pub use batch::{DeletionConfirm, ObservationWrite, StatusChange};
pub use events::{EventRecord, NewEvent};
pub use identity::{BindingRecord, NewUser, ProjectRecord, RoleRecord, UserRecord};
pub use images::{ImageRecord, VmSpecRecord};
pub use instances::{DeleteOutcome, InstanceRecord, InstanceState, InstanceUpdate, NewInstance};
pub use keys::{ApiKeyRecord, NewApiKey};
pub use network::{NewRule, RuleRecord, SecurityGroupRecord, SubnetRecord, VpcRecord};
pub use network_desired::NodeNetwork;
pub use nodes::{NodeFacts, NodeRecord, NodeWithAllocation, StatusCount};
pub use placements::{CommitOutcome, MoveOutcome, MoveRow, NodeGenerations, NodeGuard};
pub use quotas::{QuotaRecord, QuotaUsage};
pub use snapshots::{NodeSnapshotRow, SnapshotRecord, SnapshotSeen};
pub use volumes::{NodeVolumeRow, VolumeChange, VolumeRecord, VolumeSeen};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use uuid::Uuid;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint refused the write (e.g. a duplicate name).
    #[error("already exists")]
    Duplicate,
    /// A guarded write lost a race (generation moved on); the caller may retry.
    #[error("concurrent update conflict")]
    Conflict,
    /// The resource is still used (e.g. a VPC with instances); the message says by what.
    #[error("{0}")]
    InUse(String),
    /// A business rule checked inside the transaction refused the write; names the field.
    #[error("{0}")]
    Rejected(String),
    /// The project's quota does not allow the write; the message says which limit.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
            // PostgreSQL deadlock / serialization failure: the transaction was rolled back
            // and may simply be run again.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("40P01") | Some("40001")) =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Db(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool of either driver.
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` (an expression of type `StoreResult<T>`) inside one transaction, with `$tx`
/// bound to the open transaction; commits on `Ok`, rolls back on `Err`. SQLite transactions
/// start with `BEGIN IMMEDIATE` so concurrent writers queue on the busy timeout instead of
/// failing on a lock upgrade.
macro_rules! in_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite(p) => {
                let mut $tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let out: $crate::store::StoreResult<_> = async { $body }.await;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
            $crate::store::Pool::Postgres(p) => {
                let mut $tx = p.begin().await?;
                let out: $crate::store::StoreResult<_> = async { $body }.await;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
        }
    };
}

pub(crate) use in_tx;
pub(crate) use on_pool;

/// Called with each node whose desired state a store write changed as a side effect (VPC
/// peers, endpoints, source groups), after the write committed.
pub type WakeHook = Box<dyn Fn(Uuid) + Send + Sync>;

/// The scheduler's database.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    wake: Arc<OnceLock<WakeHook>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    /// `sqlite://PATH` or `postgres://…`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            POSTGRES_MIGRATOR.run(&pool).await?;
            Pool::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            // In-memory databases are per connection: keep exactly one.
            let max = if url.contains(":memory:") { 1 } else { 4 };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            SQLITE_MIGRATOR.run(&pool).await?;
            Pool::Sqlite(pool)
        } else {
            return Err(StoreError::Corrupt(format!(
                "unsupported database URL scheme in {:?}: use sqlite:// or postgres://",
                redact_url(url)
            )));
        };
        Ok(Self {
            pool,
            wake: Arc::default(),
        })
    }

    /// Sets the hook that wakes nodes whose desired state changed as a side effect of a
    /// write (once; later calls are ignored).
    pub fn set_wake_hook(&self, hook: WakeHook) {
        let _ = self.wake.set(hook);
    }

    /// Wakes `nodes` (after the transaction that changed them committed).
    pub(crate) fn wake(&self, nodes: &[Uuid]) {
        if let Some(hook) = self.wake.get() {
            nodes.iter().for_each(|n| hook(*n));
        }
    }

    /// The embedded default: `DATA_DIR/thecloud.db`.
    pub fn sqlite_url_for(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("thecloud.db").display())
    }

    /// PostgreSQL takes `$N` placeholders in generated multi-row SQL; SQLite gets `?`.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub fn driver_name(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

/// A database URL without its password (in the authority or the query), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let mut out = redact_authority(url);
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_authority(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Converts a stored count or size to `u64` (they are never negative).
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Converts a size to the `BIGINT` the database stores.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
