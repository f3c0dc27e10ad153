//! `cloud login`, `cloud key …`, `cloud audit` and `cloud events`: identity, API keys, the
//! audit log and the live event stream.

use super::Ctx;
use crate::cli::parse_duration;
use crate::config::{self as cfg, ConfigKey};
use crate::output::{self, OutputFormat, Table, age, emit};
use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use cloud_api::{CreateApiKeyRequest, LoginRequest, RotateApiKeyRequest};
use futures::StreamExt;
use std::io::BufRead;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
    echo \"$PASSWORD\" | cloud login ann@example.org --password-stdin\n  \
    CLOUD_PASSWORD=… cloud login ann@example.org --project web")]
pub struct LoginArgs {
    pub email: String,
    /// Project (name or id) the key acts in; needed when you are in several.
    #[arg(long)]
    pub project: Option<String>,
    /// Read the password from the first line of stdin (else from CLOUD_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
    /// Print the key instead of saving it in the config file.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Make a new API key of yours (shown once).
    #[command(after_help = "Examples:\n  cloud key create ci --expires 30d")]
    Create(KeyCreateArgs),
    /// List your API keys (never their secrets).
    #[command(visible_alias = "ls")]
    List,
    /// Revoke one of your keys: it stops working at once.
    #[command(visible_alias = "revoke")]
    Rm(KeyTarget),
    /// Replace a key: a new one now, the old one keeps working for the overlap.
    #[command(after_help = "Examples:\n  cloud key rotate 01a2… --overlap 1h")]
    Rotate(KeyRotateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeyCreateArgs {
    pub name: String,
    /// Project (name or id) it acts in (default: the current key's).
    #[arg(long)]
    pub project: Option<String>,
    /// Lifetime, e.g. 30d, 12h (default: no expiry).
    #[arg(long, value_parser = parse_days)]
    pub expires: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct KeyTarget {
    /// Key id (see `cloud key list`).
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct KeyRotateArgs {
    pub id: String,
    /// How long the old key keeps working (default 1h; 0s: stops now).
    #[arg(long, value_parser = parse_days, default_value = "1h")]
    pub overlap: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only rows with this outcome.
    #[arg(long, value_parser = ["success", "denied", "failure"])]
    pub outcome: Option<String>,
    /// How many rows (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  cloud events\n  cloud events -f --after 1200")]
pub struct EventsArgs {
    /// Only events after this seq.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Keep streaming new events (reconnects and resumes from the last one seen).
    #[arg(short, long)]
    pub follow: bool,
}

/// `30d`, `12h`, `90s`, `500ms`.
fn parse_days(s: &str) -> Result<Duration, String> {
    match s.strip_suffix('d') {
        Some(n) => n
            .parse::<u64>()
            .map(|d| Duration::from_secs(d * 86_400))
            .map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 90s")),
        None => parse_duration(s),
    }
}

fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    match std::env::var("CLOUD_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => bail!("give the password on stdin with --password-stdin, or in CLOUD_PASSWORD"),
    }
}

pub async fn login(ctx: &Ctx, a: LoginArgs) -> Result<()> {
    let password = read_password(a.password_stdin)?;
    let anonymous = cloud_api::Client::new(&ctx.resolved.api_url.value, None)?;
    let created = anonymous
        .login(&LoginRequest {
            email: a.email.clone(),
            password,
            project: a.project,
        })
        .await?;
    if a.print {
        return emit(&format!("{}\n", created.key));
    }
    let path = ctx
        .config_path
        .clone()
        .context("no config file location (set HOME or CLOUD_CONFIG), use --print")?;
    cfg::set(&path, ConfigKey::ApiKey, &created.key)?;
    let until = created
        .info
        .expires_at
        .map(|t| format!(" until {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    emit(&format!(
        "Logged in as {}{until}; the key is saved in {}.\n",
        a.email,
        path.display()
    ))
}

pub async fn keys(ctx: &Ctx, cmd: KeyCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let created = |k: &cloud_api::CreatedApiKey| match ctx.output {
        OutputFormat::Json => output::to_json(k),
        OutputFormat::Table => Ok(format!(
            "{}\n\nThis is the only time the key is shown. Key id: {}\n",
            k.key, k.info.id
        )),
    };
    let text = match cmd {
        KeyCmd::Create(a) => created(
            &client
                .key_create(&CreateApiKeyRequest {
                    name: a.name,
                    project: a.project,
                    expires_in_seconds: a.expires.map(|d| d.as_secs()),
                })
                .await?,
        )?,
        KeyCmd::List => {
            let keys = client.key_list().await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&keys)?,
                OutputFormat::Table => {
                    let mut t = Table::new(&["ID", "NAME", "PREFIX", "PROJECT", "AGE", "EXPIRES"]);
                    for k in &keys {
                        t.row(vec![
                            k.id.to_string(),
                            k.name.clone(),
                            k.prefix.clone(),
                            k.project_id.to_string(),
                            age(k.created_at, now),
                            k.expires_at
                                .map(|e| e.format("%Y-%m-%d %H:%M").to_string())
                                .unwrap_or_else(|| "never".into()),
                        ]);
                    }
                    t.render()
                }
            }
        }
        KeyCmd::Rm(k) => {
            client.key_revoke(&k.id).await?;
            format!("revoked {}\n", k.id)
        }
        KeyCmd::Rotate(a) => created(
            &client
                .key_rotate(
                    &a.id,
                    &RotateApiKeyRequest {
                        overlap_seconds: Some(a.overlap.as_secs()),
                    },
                )
                .await?,
        )?,
    };
    emit(&text)
}

pub async fn audit(ctx: &Ctx, a: AuditArgs) -> Result<()> {
    let page = ctx.client()?.audit(a.outcome.as_deref(), a.limit).await?;
    let text = match ctx.output {
        OutputFormat::Json => output::to_json(&page.items)?,
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "TIME", "ACTION", "RESOURCE", "OUTCOME", "STATUS", "USER", "SOURCE",
            ]);
            for r in &page.items {
                t.row(vec![
                    r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.action.clone(),
                    format!(
                        "{} {}",
                        r.resource_type,
                        r.resource_id.clone().unwrap_or_default()
                    ),
                    r.outcome.clone(),
                    r.status.to_string(),
                    r.user_id
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.source.clone(),
                ]);
            }
            t.render()
        }
    };
    emit(&text)
}

fn event_line(e: &cloud_api::Event, json: bool) -> Result<String> {
    if json {
        return Ok(format!("{}\n", serde_json::to_string(e)?));
    }
    let data = match (e.data.get("from"), e.data.get("to")) {
        (Some(f), Some(t)) => {
            let reason = e.data["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!(
                "{} → {}{reason}",
                f.as_str().unwrap_or("?"),
                t.as_str().unwrap_or("?")
            )
        }
        _ => e
            .data
            .get("node_name")
            .and_then(|n| n.as_str())
            .map(|n| format!("on {n}"))
            .unwrap_or_default(),
    };
    Ok(format!(
        "{:>6}  {}  {:<16} {} {}  {data}\n",
        e.seq,
        e.at.format("%H:%M:%S%.3f"),
        e.kind,
        e.resource_type,
        e.resource_id
    ))
}

pub async fn events(ctx: &Ctx, a: EventsArgs) -> Result<()> {
    let client = ctx.client()?;
    let json = matches!(ctx.output, OutputFormat::Json);
    let mut last = a.after;
    if !a.follow {
        loop {
            let page = client.events(last, 1000).await?;
            for e in &page.items {
                emit(&event_line(e, json)?)?;
                last = e.seq;
            }
            if page.next_cursor.is_none() {
                return Ok(());
            }
        }
    }
    // Follow: stream, and on a drop (slow, restart) resume from the last seq seen.
    loop {
        let mut ws = client.events_stream(last).await?;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let e: cloud_api::Event = serde_json::from_str(&t)?;
                    emit(&event_line(&e, json)?)?;
                    last = e.seq;
                }
                Ok(Message::Close(f)) => {
                    if let Some(f) = f {
                        eprintln!(
                            "stream closed ({}: {}); resuming after {last}",
                            f.code, f.reason
                        );
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("stream error ({e}); resuming after {last}");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
