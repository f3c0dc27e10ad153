//! `cloud vpc …`: create, list, show and remove VPCs.

use super::Ctx;
use crate::cli_network::VpcCmd;
use crate::output::{self, OutputFormat, emit};
use crate::output_network as net;
use anyhow::Result;
use chrono::Utc;
use cloud_api::{CreateVpcRequest, Vpc};

pub async fn run(ctx: &Ctx, cmd: VpcCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let text = match cmd {
        VpcCmd::Create { name, cidr } => {
            let vpc = client.vpc_create(&CreateVpcRequest { name, cidr }).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&vpc)?,
                OutputFormat::Table => net::vpc_detail(&vpc, &[], now),
            }
        }
        VpcCmd::List => {
            let items = client.vpc_list().await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&items)?,
                OutputFormat::Table => net::vpc_table(&items, now),
            }
        }
        VpcCmd::Show(t) => {
            let vpc = client.vpc_get(&t.name).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&vpc)?,
                OutputFormat::Table => {
                    let subnets = client.subnet_list(&vpc.id.to_string()).await?;
                    net::vpc_detail(&vpc, &subnets, now)
                }
            }
        }
        VpcCmd::Rm(t) => {
            // Resolve the name first and delete by id: what is printed is what was deleted.
            let vpc = client.vpc_get(&t.name).await?;
            client.vpc_delete(&vpc.id.to_string()).await?;
            render_removed(ctx.output, &vpc)?
        }
    };
    emit(&text)
}

/// What `rm` prints: the name, or the deleted object as JSON.
fn render_removed(format: OutputFormat, vpc: &Vpc) -> Result<String> {
    match format {
        OutputFormat::Json => output::to_json(vpc),
        OutputFormat::Table => Ok(format!("{}\n", vpc.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::vpc;

    #[test]
    fn removed_vpcs_print_their_name_or_the_object() {
        let v = vpc("prod", "10.10.0.0/16", 5);
        assert_eq!(render_removed(OutputFormat::Table, &v).unwrap(), "prod\n");
        let json: serde_json::Value =
            serde_json::from_str(&render_removed(OutputFormat::Json, &v).unwrap()).unwrap();
        assert_eq!(json["id"], v.id.to_string());
        assert_eq!(json["vni"], 4242);
    }
}
