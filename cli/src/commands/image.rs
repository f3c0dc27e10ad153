//! `cloud image …`: register, list, show and unregister VM images.

use super::Ctx;
use crate::output::{self, OutputFormat, Table, age, emit, key_values, timestamp};
use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use cloud_api::{CreateImageRequest, Image, ImageFormat};

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Register a VM image: a base disk every VM node has at the same absolute path
    /// (nothing is uploaded), optionally booted directly from a kernel.
    #[command(after_help = "Examples:\n  \
        cloud image create debian-12 --path /var/lib/images/debian-12.qcow2\n  \
        cloud image create tiny --path /img/base.raw --format raw \\\n      \
        --kernel /img/vmlinuz --initrd /img/initrd.gz --cmdline console=ttyS0")]
    Create(ImageCreateArgs),
    /// List the images of your project.
    #[command(visible_alias = "ls")]
    List,
    /// Show every field of one image.
    #[command(visible_alias = "get")]
    Show(ImageTarget),
    /// Unregister an image (VMs created from it keep running; the files stay).
    #[command(visible_alias = "delete")]
    Rm(ImageTarget),
}

#[derive(Debug, Clone, Args)]
pub struct ImageCreateArgs {
    /// Image name (lowercase letters, digits and '-').
    pub name: String,
    /// Absolute path of the base disk on the nodes.
    #[arg(long)]
    pub path: String,
    /// Disk format: qcow2 or raw.
    #[arg(long, default_value = "qcow2", value_parser = ["qcow2", "raw"])]
    pub format: String,
    /// Boot this kernel directly (absolute path on the nodes).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Initial ramdisk for --kernel.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<String>,
    /// Kernel command line for --kernel (default console=ttyS0).
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    /// Keep the image in your project (by default every project sees and uses it).
    #[arg(long)]
    pub private: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ImageTarget {
    /// Image name or id.
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

pub async fn run(ctx: &Ctx, cmd: ImageCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let one = |i: &Image| match ctx.output {
        OutputFormat::Json => output::to_json(i),
        OutputFormat::Table => Ok(detail(i, now)),
    };
    let text = match cmd {
        ImageCmd::Create(a) => one(&client
            .image_create(&CreateImageRequest {
                name: a.name,
                path: a.path,
                format: ImageFormat::parse(&a.format).unwrap_or_default(),
                kernel: a.kernel,
                initrd: a.initrd,
                cmdline: a.cmdline,
                public: Some(!a.private),
            })
            .await?)?,
        ImageCmd::List => {
            let items = client.image_list().await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&items)?,
                OutputFormat::Table => table(&items, now),
            }
        }
        ImageCmd::Show(t) => one(&client.image_get(&t.image).await?)?,
        ImageCmd::Rm(t) => {
            let img = client.image_get(&t.image).await?;
            client.image_delete(&img.id.to_string()).await?;
            format!("{}\n", img.name)
        }
    };
    emit(&text)
}

fn table(items: &[Image], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No images. Register one with `cloud image create NAME --path /path/on/nodes.qcow2`.\n"
            .into();
    }
    let mut t = Table::new(&["NAME", "ID", "FORMAT", "PATH", "BOOT", "AGE"]);
    for i in items {
        t.row(vec![
            i.name.clone(),
            i.id.to_string(),
            i.format.to_string(),
            i.path.clone(),
            if i.kernel.is_some() { "kernel" } else { "disk" }.into(),
            age(i.created_at, now),
        ]);
    }
    t.render()
}

fn detail(i: &Image, now: DateTime<Utc>) -> String {
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    key_values(&[
        ("Name", i.name.clone()),
        ("ID", i.id.to_string()),
        ("Format", i.format.to_string()),
        ("Path", i.path.clone()),
        ("Kernel", dash(&i.kernel)),
        ("Initrd", dash(&i.initrd)),
        ("Cmdline", dash(&i.cmdline)),
        (
            "Visibility",
            if i.public {
                "every project"
            } else {
                "this project"
            }
            .to_string(),
        ),
        ("Created", timestamp(Some(i.created_at), now)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_render_as_a_table_and_in_detail() {
        let now = crate::testutil::now();
        let img = Image {
            id: cloud_api::ImageId::new(),
            name: "tiny".into(),
            path: "/img/base.raw".into(),
            format: ImageFormat::Raw,
            kernel: Some("/img/vmlinuz".into()),
            initrd: None,
            cmdline: Some("console=ttyS0".into()),
            created_at: now,
            public: true,
        };
        let t = table(std::slice::from_ref(&img), now);
        assert!(
            t.contains("tiny") && t.contains("raw") && t.contains("kernel"),
            "{t}"
        );
        let d = detail(&img, now);
        assert!(d.contains("/img/vmlinuz") && d.contains("Initrd"), "{d}");
        assert!(table(&[], now).contains("cloud image create"));
    }
}
