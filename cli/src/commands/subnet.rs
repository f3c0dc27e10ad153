//! `cloud subnet …`: create, list, show and remove the subnets of a VPC.

use super::Ctx;
use crate::cli_network::SubnetCmd;
use crate::output::{self, OutputFormat, emit};
use crate::output_network as net;
use anyhow::Result;
use chrono::Utc;
use cloud_api::{Client, CreateSubnetRequest};

pub async fn run(ctx: &Ctx, cmd: SubnetCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let text = match cmd {
        SubnetCmd::Create {
            name,
            vpc,
            cidr,
            nat_egress,
        } => {
            let req = CreateSubnetRequest {
                name,
                cidr,
                nat_egress,
            };
            let subnet = client.subnet_create(&vpc.vpc, &req).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&subnet)?,
                OutputFormat::Table => {
                    net::subnet_detail(&subnet, vpc_name(&client, &vpc.vpc).await.as_deref(), now)
                }
            }
        }
        SubnetCmd::List { vpc } => {
            let items = client.subnet_list(&vpc.vpc).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&items)?,
                OutputFormat::Table => net::subnet_table(&items, now),
            }
        }
        SubnetCmd::Show(t) => {
            let subnet = client.subnet_get(&t.vpc.vpc, &t.subnet).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&subnet)?,
                OutputFormat::Table => {
                    let vpc = vpc_name(&client, &t.vpc.vpc).await;
                    net::subnet_detail(&subnet, vpc.as_deref(), now)
                }
            }
        }
        SubnetCmd::Rm(t) => {
            // Resolve first and delete by ids: what is printed is what was deleted.
            let subnet = client.subnet_get(&t.vpc.vpc, &t.subnet).await?;
            client
                .subnet_delete(&subnet.vpc_id.to_string(), &subnet.id.to_string())
                .await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&subnet)?,
                OutputFormat::Table => format!("{}\n", subnet.name),
            }
        }
    };
    emit(&text)
}

/// The VPC's name for display; `None` when it cannot be fetched (the id is shown instead).
async fn vpc_name(client: &Client, vpc: &str) -> Option<String> {
    client.vpc_get(vpc).await.ok().map(|v| v.name)
}
