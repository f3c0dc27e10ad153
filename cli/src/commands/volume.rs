//! `cloud volume …`: create (and wait until available), list, show and remove (and wait until
//! gone) volumes.

use super::Ctx;
use crate::cli_volume::{VolumeCmd, VolumeCreateArgs, VolumeRmArgs};
use crate::output::{self, OutputFormat, emit};
use crate::output_volume as vol;
use crate::wait_volume::{Goal, wait_for};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use cloud_api::{Client, ClientError, Volume, VolumeStatus};

pub async fn run(ctx: &Ctx, cmd: VolumeCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let text = match cmd {
        VolumeCmd::Create(args) => {
            let v = create(&client, &args).await?;
            render_volume(ctx.output, &v, now)?
        }
        VolumeCmd::List => {
            let items = client.volume_list().await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&items)?,
                OutputFormat::Table => vol::volume_table(&items, now),
            }
        }
        VolumeCmd::Show(t) => {
            let v = client.volume_get(&t.volume).await?;
            render_volume(ctx.output, &v, now)?
        }
        VolumeCmd::Rm(args) => {
            let v = rm(&client, &args).await?;
            render_removed(ctx.output, &v)?
        }
        VolumeCmd::Attach(args) => {
            let v = client
                .volume_attach(&args.volume, &args.instance, &args.path)
                .await?;
            render_volume(ctx.output, &v, now)?
        }
        VolumeCmd::Detach(t) => {
            let v = client.volume_detach(&t.volume).await?;
            render_volume(ctx.output, &v, now)?
        }
        VolumeCmd::Resize(args) => {
            let v = client.volume_resize(&args.volume, args.size).await?;
            render_volume(ctx.output, &v, now)?
        }
    };
    emit(&text)
}

/// Creates the volume and, unless `--no-wait`, waits until it is available; the last state.
async fn create(client: &Client, args: &VolumeCreateArgs) -> Result<Volume> {
    let created = client.volume_create(&args.to_request()).await?;
    if args.wait.no_wait {
        eprintln!("{}: created ({})", created.name, created.status);
        return Ok(created);
    }
    Ok(
        wait_for(client, Goal::Available, &created, args.wait.timeout)
            .await?
            .unwrap_or(created),
    )
}

/// Starts the deletion and, unless `--no-wait`, waits until the volume is gone; the volume as
/// the deletion answered it.
async fn rm(client: &Client, args: &VolumeRmArgs) -> Result<Volume> {
    // Resolve the name first and delete by id: what is printed is what was deleted, and the
    // wait cannot confuse it with a new volume of the same name.
    let before = client.volume_get(&args.target.volume).await?;
    let id = before.id.to_string();
    let deleted = match client.volume_delete(&id).await {
        Ok(v) => v,
        // 204 (or a 2xx without the volume): deleted all the same.
        Err(ClientError::Unexpected { status, .. }) if (200..300).contains(&status) => Volume {
            status: VolumeStatus::Deleting,
            ..before
        },
        Err(e) => {
            return Err(e).with_context(|| format!("cannot delete volume {}", before.name));
        }
    };
    if !args.wait.no_wait {
        wait_for(client, Goal::Gone, &deleted, args.wait.timeout).await?;
    }
    Ok(deleted)
}

/// What `create` and `show` print: every field, or the object as JSON.
fn render_volume(format: OutputFormat, v: &Volume, now: DateTime<Utc>) -> Result<String> {
    match format {
        OutputFormat::Json => output::to_json(v),
        OutputFormat::Table => Ok(vol::volume_detail(v, now)),
    }
}

/// What `rm` prints: the name, or the deleted object as JSON.
fn render_removed(format: OutputFormat, v: &Volume) -> Result<String> {
    match format {
        OutputFormat::Json => output::to_json(v),
        OutputFormat::Table => Ok(format!("{}\n", v.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::volume;

    #[test]
    fn removed_volumes_print_their_name_or_the_object() {
        let v = volume("data", 10, VolumeStatus::Deleting, 5);
        assert_eq!(render_removed(OutputFormat::Table, &v).unwrap(), "data\n");
        let json: serde_json::Value =
            serde_json::from_str(&render_removed(OutputFormat::Json, &v).unwrap()).unwrap();
        assert_eq!(json["id"], v.id.to_string());
        assert_eq!(json["status"], "deleting");
    }

    #[test]
    fn created_volumes_print_every_field_or_the_object() {
        let v = volume("data", 10, VolumeStatus::Available, 5);
        let out = render_volume(OutputFormat::Table, &v, crate::testutil::now()).unwrap();
        assert!(out.starts_with("Name:"), "{out}");
        assert!(out.contains("10G") && out.contains("available"), "{out}");
        let json: serde_json::Value = serde_json::from_str(
            &render_volume(OutputFormat::Json, &v, crate::testutil::now()).unwrap(),
        )
        .unwrap();
        assert_eq!(json["size_gb"], 10);
        assert_eq!(json["node_name"], "node-1");
    }
}
