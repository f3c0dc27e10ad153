//! `cloud node …`: list and show compute nodes.

use super::Ctx;
use crate::cli::{NodeCmd, TokenCmd};
use crate::output::{self, OutputFormat, emit};
use anyhow::Result;
use chrono::Utc;

pub async fn run(ctx: &Ctx, cmd: NodeCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let text = match cmd {
        NodeCmd::List => {
            let items = client.node_list().await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&items)?,
                OutputFormat::Table => output::node_table(&items, now),
            }
        }
        NodeCmd::Show(t) => {
            let node = client.node_get(&t.name).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&node)?,
                OutputFormat::Table => output::node_detail(&node, now),
            }
        }
        NodeCmd::Drain(a) => {
            let node = client.node_drain(&a.target.name, a.keep_instances).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&node)?,
                OutputFormat::Table if a.keep_instances => format!(
                    "{}: {} (new instances go elsewhere; its instances keep running)",
                    node.name, node.status
                ),
                OutputFormat::Table => format!(
                    "{}: {} (new instances go elsewhere; its instances are being moved or stopped)",
                    node.name, node.status
                ),
            }
        }
        NodeCmd::Undrain(t) => {
            let node = client.node_undrain(&t.name).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&node)?,
                OutputFormat::Table => format!("{}: {}", node.name, node.status),
            }
        }
        NodeCmd::Token(TokenCmd::Create { uses, ttl }) => {
            let req = cloud_api::CreateJoinTokenRequest {
                uses: Some(uses),
                ttl_seconds: Some(ttl.as_secs()),
            };
            let token = client.join_token_create(&req).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&token)?,
                OutputFormat::Table => {
                    eprintln!(
                        "join token usable {} time(s) until {} (shown only once):",
                        token.uses, token.expires_at
                    );
                    token.token.clone()
                }
            }
        }
    };
    emit(&text)
}
