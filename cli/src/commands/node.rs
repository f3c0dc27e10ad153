//! `cloud node …`: list and show compute nodes.

use super::Ctx;
use crate::cli::NodeCmd;
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
    };
    emit(&text)
}
