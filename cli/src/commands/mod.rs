//! Command handlers: each resolves what it needs, calls the API client and prints the result.

pub mod access;
pub mod config;
pub mod console;
pub mod image;
pub mod instance;
pub mod node;
pub mod sg;
pub mod snapshot;
pub mod subnet;
pub mod volume;
pub mod vpc;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{self as cfg, EnvLookup, Resolved};
use crate::output::OutputFormat;
use anyhow::Result;
use std::path::PathBuf;

/// What every command gets: the output format and the resolved endpoint, key and config file.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub output: OutputFormat,
    pub resolved: Resolved,
    pub config_path: Option<PathBuf>,
}

impl Ctx {
    /// Resolves flags > environment > config file > default.
    pub fn new(global: &GlobalArgs, env: EnvLookup<'_>) -> Result<Self> {
        let config_path = cfg::config_path(env);
        let file = cfg::load(config_path.as_deref())?;
        let resolved = cfg::resolve(
            global.api_url.as_deref(),
            global.api_key.as_deref(),
            env,
            &file,
        );
        Ok(Self {
            output: global.output,
            resolved,
            config_path,
        })
    }

    /// A client of the resolved endpoint with the resolved key.
    pub fn client(&self) -> Result<cloud_api::Client> {
        Ok(cloud_api::Client::new(
            &self.resolved.api_url.value,
            self.resolved.api_key.as_ref().map(|k| k.value.clone()),
        )?)
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx::new(&cli.global, &cfg::process_env)?;
    match cli.command {
        Command::Instance(cmd) => instance::run(&ctx, cmd).await,
        Command::Node(cmd) => node::run(&ctx, cmd).await,
        Command::Vpc(cmd) => vpc::run(&ctx, cmd).await,
        Command::Subnet(cmd) => subnet::run(&ctx, cmd).await,
        Command::Sg(cmd) => sg::run(&ctx, cmd).await,
        Command::Volume(cmd) => volume::run(&ctx, cmd).await,
        Command::Snapshot(cmd) => snapshot::run(&ctx, cmd).await,
        Command::Image(cmd) => image::run(&ctx, cmd).await,
        Command::Config(cmd) => config::run(&ctx, cmd),
        Command::Login(a) => access::login(&ctx, a).await,
        Command::Key(cmd) => access::keys(&ctx, cmd).await,
        Command::Audit(a) => access::audit(&ctx, a).await,
        Command::Events(a) => access::events(&ctx, a).await,
    }
}
