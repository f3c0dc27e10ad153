//! `cloud snapshot …`: take (and wait until taken), list, show, remove (and wait until gone)
//! snapshots, and restore one into a new volume (and wait until it is available).

use super::Ctx;
use crate::cli_snapshot::{SnapshotCmd, SnapshotCreateArgs, SnapshotRestoreArgs, SnapshotRmArgs};
use crate::output::{self, OutputFormat, emit};
use crate::output_volume as vol;
use crate::{wait_snapshot, wait_volume};
use anyhow::{Context, Result};
use chrono::Utc;
use cloud_api::{
    Client, ClientError, CreateSnapshotRequest, RestoreSnapshotRequest, Snapshot, SnapshotStatus,
    Volume,
};

pub async fn run(ctx: &Ctx, cmd: SnapshotCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let snap = |s: &Snapshot| match ctx.output {
        OutputFormat::Json => output::to_json(s),
        OutputFormat::Table => Ok(vol::snapshot_detail(s, now)),
    };
    let text = match cmd {
        SnapshotCmd::Create(args) => snap(&create(&client, &args).await?)?,
        SnapshotCmd::List(args) => {
            let mut items = client.snapshot_list().await?;
            if let Some(v) = &args.volume {
                // Resolve the name, so that both ids and names filter.
                let v = client.volume_get(v).await?;
                items.retain(|s| s.volume_id == v.id);
            }
            match ctx.output {
                OutputFormat::Json => output::to_json(&items)?,
                OutputFormat::Table => vol::snapshot_table(&items, now),
            }
        }
        SnapshotCmd::Show(t) => snap(&client.snapshot_get(&t.snapshot).await?)?,
        SnapshotCmd::Rm(args) => {
            let s = rm(&client, &args).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&s)?,
                OutputFormat::Table => format!("{}\n", s.name),
            }
        }
        SnapshotCmd::Restore(args) => {
            let v = restore(&client, &args).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&v)?,
                OutputFormat::Table => vol::volume_detail(&v, now),
            }
        }
    };
    emit(&text)
}

async fn create(client: &Client, args: &SnapshotCreateArgs) -> Result<Snapshot> {
    let created = client
        .snapshot_create(&CreateSnapshotRequest {
            volume_id: args.volume.clone(),
            name: args.name.clone(),
        })
        .await?;
    if args.wait.no_wait {
        eprintln!("{}: created ({})", created.name, created.status);
        return Ok(created);
    }
    Ok(wait_snapshot::wait_for(
        client,
        wait_snapshot::Goal::Available,
        &created,
        args.wait.timeout,
    )
    .await?
    .unwrap_or(created))
}

async fn rm(client: &Client, args: &SnapshotRmArgs) -> Result<Snapshot> {
    // Delete by id: what is printed is what was deleted.
    let before = client.snapshot_get(&args.target.snapshot).await?;
    let deleted = match client.snapshot_delete(&before.id.to_string()).await {
        Ok(s) => s,
        Err(ClientError::Unexpected { status, .. }) if (200..300).contains(&status) => Snapshot {
            status: SnapshotStatus::Deleting,
            ..before
        },
        Err(e) => {
            return Err(e).with_context(|| format!("cannot delete snapshot {}", before.name));
        }
    };
    if !args.wait.no_wait {
        wait_snapshot::wait_for(
            client,
            wait_snapshot::Goal::Gone,
            &deleted,
            args.wait.timeout,
        )
        .await?;
    }
    Ok(deleted)
}

async fn restore(client: &Client, args: &SnapshotRestoreArgs) -> Result<Volume> {
    let created = client
        .snapshot_restore(
            &args.target.snapshot,
            &RestoreSnapshotRequest {
                name: args.name.clone(),
                size_gb: args.size,
            },
        )
        .await?;
    if args.wait.no_wait {
        eprintln!("{}: created ({})", created.name, created.status);
        return Ok(created);
    }
    Ok(wait_volume::wait_for(
        client,
        wait_volume::Goal::Available,
        &created,
        args.wait.timeout,
    )
    .await?
    .unwrap_or(created))
}
