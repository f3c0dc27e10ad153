//! The application context shared by the HTTP API, the agent gRPC service and background
//! tasks: store, connected sessions, PKI, metrics and configuration.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::planner::Planner;
use crate::sessions::Sessions;
use crate::store::Store;
use cloud_api::ProjectId;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct App {
    pub config: Config,
    pub store: Store,
    pub sessions: Sessions,
    pub pki: Pki,
    pub metrics: Metrics,
    pub planner: Planner,
    pub key_cache: crate::keycache::KeyCache,
    pub status_writer: crate::statuswriter::StatusWriter,
    pub specs: crate::specs::SpecCache,
    /// The project keys act in until projects are managed through the API.
    pub default_project: ProjectId,
    placement_seq: AtomicU64,
    placement_seed: u64,
    /// Nodes holding volumes: only their desired states and observations involve volumes
    /// (so the rest of the fleet pays nothing for them). Loaded at start, grows on create.
    volume_nodes: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
    /// Requests per API key.
    pub api_limiter: crate::ratelimit::RateLimiter,
    /// Login attempts per account and per source address.
    pub login_account_limiter: crate::ratelimit::RateLimiter,
    pub login_source_limiter: crate::ratelimit::RateLimiter,
    /// The event stream (see `events`).
    pub events: crate::events::EventBus,
    /// The writer's end of `events`, taken once by the server at start.
    pub events_inbox: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<crate::store::NewEvent>>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Store,
        pki: Pki,
        default_project: ProjectId,
        planner: Planner,
        status_writer: crate::statuswriter::StatusWriter,
    ) -> Self {
        let metrics = Metrics::new();
        let (events, events_inbox) = crate::events::EventBus::new(metrics.events_dropped.clone());
        Self {
            events,
            events_inbox: std::sync::Mutex::new(Some(events_inbox)),
            store,
            sessions: Sessions::new(),
            pki,
            metrics,
            planner,
            key_cache: crate::keycache::KeyCache::default(),
            status_writer,
            specs: crate::specs::SpecCache::default(),
            default_project,
            placement_seq: AtomicU64::new(0),
            placement_seed: rand::random(),
            volume_nodes: Default::default(),
            api_limiter: crate::ratelimit::RateLimiter::new(
                config.rate_limit_per_second,
                config.rate_limit_burst,
            ),
            // 10 attempts a minute per account, 30 per source address.
            login_account_limiter: crate::ratelimit::RateLimiter::new(10.0 / 60.0, 10),
            login_source_limiter: crate::ratelimit::RateLimiter::new(0.5, 30),
            config,
        }
    }

    /// Remembers that `node` holds volumes.
    pub fn volume_nodes_add(&self, node: uuid::Uuid) {
        self.volume_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node);
    }

    /// Whether `node` may hold volumes.
    pub fn has_volumes(&self, node: uuid::Uuid) -> bool {
        self.volume_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&node)
    }

    /// Placement options from the configuration.
    pub fn placement_options(&self) -> cloud_placement::Options {
        cloud_placement::Options {
            default_strategy: if self.config.spread_by_default {
                cloud_placement::Strategy::Spread
            } else {
                cloud_placement::Strategy::BinPack
            },
            ..cloud_placement::Options::default()
        }
    }

    /// A fresh seed for one placement decision: ties between equal nodes are broken
    /// differently by concurrent requests, while each plan stays deterministic for its seed.
    pub fn next_placement_seed(&self) -> u64 {
        self.placement_seed.wrapping_add(
            self.placement_seq
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }
}
