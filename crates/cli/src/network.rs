//! `skiff network vnet create|show|delete` and `skiff network vnet subnet create|show|delete`:
//! the minimal `Microsoft.Network/virtualNetworks` API (like `az network vnet`).

use std::io::Write;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::commands::Ctx;
use crate::error::CliError;
use crate::OutputFormat;

/// api-version sent for Microsoft.Network calls (any date version is accepted).
const NETWORK_API: &str = "2023-09-01";

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Virtual networks and their subnets.
    #[command(subcommand)]
    Vnet(VnetCommand),
}

#[derive(Debug, Subcommand)]
pub enum VnetCommand {
    /// Create or update a virtual network (optionally with one subnet, as `az network vnet create`).
    Create {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(short = 'n', long)]
        name: String,
        /// Address space (repeatable), e.g. 10.1.0.0/16.
        #[arg(long = "address-prefixes", num_args = 1.., required = true)]
        address_prefixes: Vec<String>,
        #[arg(long = "subnet-name", requires = "subnet_prefix")]
        subnet_name: Option<String>,
        #[arg(long = "subnet-prefix", requires = "subnet_name")]
        subnet_prefix: Option<String>,
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    Show {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    Delete {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Subnets of a virtual network.
    #[command(subcommand)]
    Subnet(SubnetCommand),
}

#[derive(Debug, Subcommand)]
pub enum SubnetCommand {
    Create {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long = "vnet-name")]
        vnet_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long = "address-prefixes")]
        address_prefix: String,
    },
    Show {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long = "vnet-name")]
        vnet_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    Delete {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long = "vnet-name")]
        vnet_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
}

fn vnet_url(ctx: &Ctx, rg: &str, name: &str, rest: &str) -> String {
    format!(
        "{}/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{name}{rest}?api-version={NETWORK_API}",
        ctx.client.base, ctx.settings.subscription
    )
}

fn print(ctx: &Ctx, v: &Value, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let text = match ctx.format {
        OutputFormat::Table | OutputFormat::Tsv | OutputFormat::Csv => {
            // One line per address block: name, prefix, id (the vnet first, then its subnets).
            let mut s = String::new();
            if let Some(p) = v["properties"]["addressSpace"]["addressPrefixes"].as_array() {
                let p: Vec<&str> = p.iter().filter_map(Value::as_str).collect();
                s.push_str(&format!("{}\t{}\t{}\n", v["name"].as_str().unwrap_or_default(), p.join(","), v["id"].as_str().unwrap_or_default()));
            }
            let subnets = v["properties"]["subnets"].as_array().cloned().unwrap_or_else(|| if v["properties"]["addressPrefix"].is_string() { vec![v.clone()] } else { vec![] });
            for sn in subnets {
                s.push_str(&format!("{}\t{}\t{}\n", sn["name"].as_str().unwrap_or_default(), sn["properties"]["addressPrefix"].as_str().unwrap_or_default(), sn["id"].as_str().unwrap_or_default()));
            }
            s
        }
        _ => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
    };
    out.write_all(text.as_bytes()).map_err(|e| CliError::usage(format!("cannot write output: {e}")))
}

pub async fn run(ctx: &Ctx, cmd: NetworkCommand, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    let NetworkCommand::Vnet(cmd) = cmd;
    match cmd {
        VnetCommand::Create { resource_group, name, address_prefixes, subnet_name, subnet_prefix, location } => {
            let mut body = json!({"location": location.unwrap_or_else(|| ctx.settings.location.clone()), "properties": {"addressSpace": {"addressPrefixes": address_prefixes}}});
            if let (Some(n), Some(p)) = (subnet_name, subnet_prefix) {
                body["properties"]["subnets"] = json!([{"name": n, "properties": {"addressPrefix": p}}]);
            }
            let v = c.send(Method::PUT, &vnet_url(ctx, &resource_group, &name, ""), Some(&body)).await?.json()?;
            print(ctx, &v, out)
        }
        VnetCommand::Show { resource_group, name } => print(ctx, &c.get_json(&vnet_url(ctx, &resource_group, &name, "")).await?, out),
        VnetCommand::Delete { resource_group, name } => {
            c.send(Method::DELETE, &vnet_url(ctx, &resource_group, &name, ""), None).await?;
            Ok(())
        }
        VnetCommand::Subnet(SubnetCommand::Create { resource_group, vnet_name, name, address_prefix }) => {
            let body = json!({"properties": {"addressPrefix": address_prefix}});
            let v = c.send(Method::PUT, &vnet_url(ctx, &resource_group, &vnet_name, &format!("/subnets/{name}")), Some(&body)).await?.json()?;
            print(ctx, &v, out)
        }
        VnetCommand::Subnet(SubnetCommand::Show { resource_group, vnet_name, name }) => {
            print(ctx, &c.get_json(&vnet_url(ctx, &resource_group, &vnet_name, &format!("/subnets/{name}"))).await?, out)
        }
        VnetCommand::Subnet(SubnetCommand::Delete { resource_group, vnet_name, name }) => {
            c.send(Method::DELETE, &vnet_url(ctx, &resource_group, &vnet_name, &format!("/subnets/{name}")), None).await?;
            Ok(())
        }
    }
}
