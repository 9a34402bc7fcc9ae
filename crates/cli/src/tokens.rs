//! `skiff token create|list|revoke`: the server's token API (`/skiff/tokens`, admin token only).

use std::io::Write;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::commands::Ctx;
use crate::error::CliError;
use crate::OutputFormat;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token scoped to a subscription (and optionally a resource group). The secret is
    /// printed once.
    Create {
        #[arg(long, required_unless_present = "admin")]
        subscription: Option<String>,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        /// Only GET requests.
        #[arg(long)]
        read_only: bool,
        /// An admin token (every subscription, token management).
        #[arg(long, conflicts_with_all = ["subscription", "resource_group", "read_only"])]
        admin: bool,
        /// Requests per second (default: the server's --rate-limit).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate_limit: Option<u32>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

fn url(ctx: &Ctx, rest: &str) -> String {
    format!("{}/skiff/tokens{rest}", ctx.client.base)
}

fn write(out: &mut (dyn Write + Send), s: &str) -> Result<(), CliError> {
    out.write_all(s.as_bytes()).map_err(|e| CliError::usage(format!("cannot write output: {e}")))
}

pub async fn run(ctx: &Ctx, cmd: TokenCommand, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create { subscription, resource_group, read_only, admin, rate_limit, description } => {
            let body = json!({"admin": admin, "subscription": subscription, "resourceGroup": resource_group, "readOnly": read_only, "rateLimit": rate_limit, "description": description});
            let v = ctx.client.send(Method::POST, &url(ctx, ""), Some(&body)).await?.json()?;
            match ctx.format {
                OutputFormat::Table | OutputFormat::Tsv => write(out, &format!("{}\n", v["token"].as_str().unwrap_or_default()))?,
                _ => write(out, &format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()))?,
            }
            eprintln!("token {} created; its secret is shown only now", v["id"].as_str().unwrap_or_default());
            Ok(())
        }
        TokenCommand::List => {
            let v = ctx.client.get_json(&url(ctx, "")).await?;
            let items = v["value"].as_array().cloned().unwrap_or_default();
            if ctx.format == OutputFormat::Json || ctx.format == OutputFormat::Yaml {
                return write(out, &format!("{}\n", serde_json::to_string_pretty(&Value::Array(items)).unwrap_or_default()));
            }
            let s = |i: &Value, k: &str| i[k].as_str().unwrap_or("-").to_string();
            let mut text = format!("{:<14} {:<38} {:<20} {:<9} {}\n", "Id", "Subscription", "ResourceGroup", "Access", "Created");
            for i in &items {
                let access = if i["admin"] == true { "admin" } else if i["readOnly"] == true { "read" } else { "write" };
                text.push_str(&format!("{:<14} {:<38} {:<20} {:<9} {}\n", s(i, "id"), s(i, "subscription"), s(i, "resourceGroup"), access, s(i, "created")));
            }
            write(out, &text)
        }
        TokenCommand::Revoke { id } => {
            ctx.client.send(Method::DELETE, &url(ctx, &format!("/{id}")), None).await?;
            eprintln!("token {id} revoked");
            Ok(())
        }
    }
}
