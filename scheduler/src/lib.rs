//! The Cloud's scheduler: the public REST API, the agent gRPC service (mutual TLS), placement,
//! health of nodes, and the state store (SQLite or PostgreSQL).
//!
//! Layout: `http` and `grpc` are thin edges; `services` hold the business rules; `store` holds
//! the SQL; `sessions` is the in-memory view of connected agents; `tasks` are the background
//! loops; `server` wires it all up.

pub mod app;
pub mod authz;
pub mod config;
pub mod error;
pub mod events;
pub mod evictor;
mod files;
pub mod grpc;
pub mod http;
pub mod keycache;
pub mod metrics;
pub mod netdesired;
pub mod pki;
pub mod planner;
pub mod ratelimit;
pub mod secrets;
pub mod server;
pub mod services;
pub mod sessions;
pub mod specs;
pub mod statuswriter;
pub mod store;
pub mod tasks;
pub mod views;
pub mod voldesired;

pub use config::Config;
pub use server::{Running, start};
