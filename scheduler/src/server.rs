//! Starts the scheduler: store, PKI, bootstrap secrets, the REST and gRPC listeners and the
//! background tasks. Used by the binary and, in-process, by the end-to-end tests.

use crate::app::App;
use crate::config::Config;
use crate::files::write_private;
use crate::pki::Pki;
use crate::secrets;
use crate::store::{NewApiKey, Store, redact_url};
use anyhow::Context;
use cloud_api::ids::ApiKeyId;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub const ADMIN_KEY_FILE: &str = "admin.key";
pub const DEFAULT_PROJECT: &str = "default";
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running scheduler.
pub struct Running {
    pub app: Arc<App>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// `host:port` for agents.
    pub fn grpc_endpoint(&self) -> String {
        self.grpc_addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.app.config.data_dir
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("pki").join("ca.crt")
    }

    pub fn join_token_file(&self) -> PathBuf {
        self.data_dir()
            .join(crate::services::nodes::JOIN_TOKEN_FILE)
    }

    pub fn admin_key(&self) -> std::io::Result<String> {
        Ok(
            std::fs::read_to_string(self.data_dir().join(ADMIN_KEY_FILE))?
                .trim()
                .to_string(),
        )
    }

    /// Stops listeners and tasks, then closes the store. Agent sessions are closed first
    /// (they would otherwise hold the gRPC server's graceful shutdown open forever); whatever
    /// has not finished after a grace period is aborted.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.app.sessions.close_all();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown grace period over; aborting remaining tasks");
            self.tasks.shutdown().await;
        }
        self.app.store.close().await;
    }

    /// Waits until a task ends (they only end on shutdown or a fatal listener error).
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }
}

/// Brings the scheduler up on `config`; returns once both listeners are bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| {
            format!(
                "cannot restrict permissions of {}",
                config.data_dir.display()
            )
        })?;

    let url = config.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
    tracing::info!(driver = store.driver_name(), url = %redact_url(&url), "store ready");
    let pki = Pki::load_or_create(&config.data_dir.join("pki"), &config.tls_san)?;
    let project = store.project_ensure(DEFAULT_PROJECT).await?;
    let (planner, planner_inbox) = crate::planner::Planner::new();
    let (status_writer, status_inbox) = crate::statuswriter::StatusWriter::new();
    let app = Arc::new(App::new(
        config.clone(),
        store,
        pki,
        project,
        planner,
        status_writer,
    ));
    // Writes that change other nodes' VPC view (peers, endpoints, source groups) wake them.
    let weak = Arc::downgrade(&app);
    app.store.set_wake_hook(Box::new(move |node| {
        if let Some(app) = weak.upgrade() {
            app.sessions.notify_desired(node.into());
        }
    }));
    for node in app.store.nodes_with_volumes().await? {
        app.volume_nodes_add(node);
    }
    bootstrap_admin_key(&app).await?;
    app.ensure_identity().await?;
    app.ensure_bootstrap_join_token().await?;

    // Nodes the store believes up get one full node_down_after to reconnect.
    let alive = app
        .store
        .node_snapshot()
        .await?
        .into_iter()
        .filter(|n| n.node.status != "down")
        .map(|n| n.node.id.into());
    app.sessions.expect_alive(alive);

    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (REST)", config.http_listen))?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {} (agent gRPC)", config.grpc_listen))?;
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let router = crate::http::router(app.clone());
    let mut rx = stop_rx.clone();
    tasks.spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(
            http,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        {
            tracing::error!(error = %e, "REST listener failed");
        }
    });

    let (svc, tls) = crate::grpc::service(app.clone());
    let mut rx = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .context("invalid TLS configuration for the agent listener")?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(svc);
    tasks.spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
        if let Err(e) = server
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(error = %e, "agent gRPC listener failed");
        }
    });

    tasks.spawn(crate::tasks::liveness(app.clone(), stop_rx.clone()));
    tasks.spawn(crate::planner::run(
        app.clone(),
        planner_inbox,
        stop_rx.clone(),
    ));
    tasks.spawn(crate::evictor::run(app.clone(), stop_rx.clone()));
    tasks.spawn(crate::statuswriter::run(
        app.clone(),
        status_inbox,
        stop_rx.clone(),
    ));
    let inbox = app
        .events_inbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(inbox) = inbox {
        tasks.spawn(crate::events::run(app.clone(), inbox, stop_rx.clone()));
    }

    tracing::info!(%http_addr, %grpc_addr, data_dir = %config.data_dir.display(), "scheduler started");
    Ok(Running {
        app,
        http_addr,
        grpc_addr,
        stop,
        tasks,
    })
}

/// Creates the admin API key on first start: stored hashed, written to `DATA_DIR/admin.key`
/// (0600) and printed once when stderr is a terminal. When stderr is redirected (a log file)
/// only the path is printed, so the key never lands in a log.
async fn bootstrap_admin_key(app: &App) -> anyhow::Result<()> {
    if app.store.api_key_count_admin().await? > 0 {
        return Ok(());
    }
    let (prefix, key) = secrets::new_api_key();
    app.store
        .api_key_insert(&NewApiKey {
            id: ApiKeyId::new(),
            project_id: app.default_project,
            name: "admin".into(),
            prefix,
            secret_hash: secrets::sha256(&key),
            is_admin: true,
            user_id: None,
            expires_at: None,
        })
        .await?;
    let path = app.config.data_dir.join(ADMIN_KEY_FILE);
    write_private(&path, format!("{key}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "\nAdmin API key (saved to {}, shown only this once):\n\n    {key}\n",
            path.display()
        );
    } else {
        tracing::info!(path = %path.display(), "created the admin API key (not logged; read it from the file)");
    }
    Ok(())
}
