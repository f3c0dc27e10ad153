//! `cloud instance …`: launch, list, show, logs, stop, start, rm (and `sg`, in `sg.rs`).

use super::Ctx;
use crate::cli::{ChangeArgs, InstanceCmd, LaunchArgs, LogsArgs, Target};
use crate::cli_network::SubnetRef;
use crate::output::{self, OutputFormat, emit};
use crate::wait::{Goal, wait_for};
use anyhow::{Context, Result};
use chrono::Utc;
use cloud_api::{Client, ClientError, Instance, InstanceStatus};

pub async fn run(ctx: &Ctx, cmd: InstanceCmd) -> Result<()> {
    let client = ctx.client()?;
    match cmd {
        InstanceCmd::Launch(args) => launch(ctx, &client, &args).await,
        InstanceCmd::List => list(ctx, &client).await,
        InstanceCmd::Show(t) => show(ctx, &client, &t).await,
        InstanceCmd::Logs(args) => logs(&client, &args).await,
        InstanceCmd::Stop(args) => change(ctx, &client, &args, Change::Stop).await,
        InstanceCmd::Start(args) => change(ctx, &client, &args, Change::Start).await,
        InstanceCmd::Rm(args) => rm(ctx, &client, &args).await,
        InstanceCmd::Sg(cmd) => super::sg::instance_sg(ctx, &client, cmd).await,
        InstanceCmd::Console(args) => super::console::run(&client, &args).await,
    }
}

/// What a command that changed one instance prints on stdout: its name, or the object as JSON.
pub fn render_changed(format: OutputFormat, inst: &Instance) -> Result<String> {
    match format {
        OutputFormat::Json => output::to_json(inst),
        OutputFormat::Table => Ok(format!("{}\n", inst.name)),
    }
}

async fn launch(ctx: &Ctx, client: &Client, args: &LaunchArgs) -> Result<()> {
    let mut req = args.to_request();
    if let Some(path) = &args.user_data_file {
        req.user_data = Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --user-data-file {}", path.display()))?,
        );
    }
    if let Some(SubnetRef::Path { vpc, subnet }) = &args.subnet {
        let found = client
            .subnet_get(vpc, subnet)
            .await
            .with_context(|| format!("cannot find subnet {vpc}/{subnet}"))?;
        req.subnet_id = Some(found.id);
    }
    let created = client.instance_create(&req).await?;
    let last = if args.wait.no_wait {
        eprintln!("{}: created ({})", created.name, created.status);
        created
    } else {
        wait_for(client, Goal::Running, &created, args.wait.timeout)
            .await?
            .unwrap_or(created)
    };
    emit(&render_changed(ctx.output, &last)?)
}

async fn list(ctx: &Ctx, client: &Client) -> Result<()> {
    let items = client.instance_list().await?;
    emit(&match ctx.output {
        OutputFormat::Json => output::to_json(&items)?,
        OutputFormat::Table => output::instance_table(&items, Utc::now()),
    })
}

async fn show(ctx: &Ctx, client: &Client, t: &Target) -> Result<()> {
    let inst = client.instance_get(&t.name).await?;
    emit(&match ctx.output {
        OutputFormat::Json => output::to_json(&inst)?,
        OutputFormat::Table => {
            let names = super::sg::names_of(client, &inst.security_groups).await;
            output::instance_detail(&inst, Utc::now(), &names)
        }
    })
}

async fn logs(client: &Client, args: &LogsArgs) -> Result<()> {
    if !args.follow {
        let text = client.instance_logs(&args.name, args.tail).await?;
        return emit(&text);
    }
    use futures::StreamExt;
    use std::io::Write;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = client.instance_logs_follow(&args.name, args.tail).await?;
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Binary(b) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(&b).and_then(|()| out.flush()).is_err() {
                    return Ok(()); // the reader went away (a pipe closed)
                }
            }
            Message::Close(Some(f)) if u16::from(f.code) != 1000 => {
                anyhow::bail!("the log stream ended: {}", f.reason)
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Stop,
    Start,
}

async fn change(ctx: &Ctx, client: &Client, args: &ChangeArgs, what: Change) -> Result<()> {
    let (answer, goal) = match what {
        Change::Stop => (client.instance_stop(&args.name).await?, Goal::Stopped),
        Change::Start => (client.instance_start(&args.name).await?, Goal::Running),
    };
    let last = if args.wait.no_wait {
        answer
    } else {
        wait_for(client, goal, &answer, args.wait.timeout)
            .await?
            .unwrap_or(answer)
    };
    emit(&render_changed(ctx.output, &last)?)
}

async fn rm(ctx: &Ctx, client: &Client, args: &ChangeArgs) -> Result<()> {
    // Resolve the name first and delete by id, so the wait cannot confuse the deleted
    // instance with a new one of the same name.
    let before = client.instance_get(&args.name).await?;
    let id = before.id.to_string();
    let deleted = match client.instance_delete(&id).await {
        Ok(inst) => inst,
        // 204 (or a 2xx without the instance): deleted all the same.
        Err(ClientError::Unexpected { status, .. }) if (200..300).contains(&status) => Instance {
            status: InstanceStatus::Deleting,
            ..before
        },
        Err(e) => return Err(e.into()),
    };
    if !args.wait.no_wait {
        wait_for(client, Goal::Gone, &deleted, args.wait.timeout).await?;
    }
    emit(&render_changed(ctx.output, &deleted)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::instance;

    #[test]
    fn changed_instances_print_their_name_or_the_object() {
        let i = instance("web", InstanceStatus::Running, 3);
        assert_eq!(render_changed(OutputFormat::Table, &i).unwrap(), "web\n");
        let json = render_changed(OutputFormat::Json, &i).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["name"], "web");
        assert_eq!(v["id"], i.id.to_string());
    }
}
