//! `skiff share ...`: Skiff-managed file shares for `azureFile` volumes
//! (`/skiff/v1/shares`, a Skiff extension of the API).

use std::io::Write;

use reqwest::Method;
use serde_json::{json, Value};

use crate::commands::{write_str, Ctx};
use crate::error::CliError;
use crate::ShareCommand;

fn url(ctx: &Ctx, account: &str, share: &str) -> String {
    ctx.client.absolute(&format!("/skiff/v1/shares/{account}/{share}"))
}

fn pretty(v: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

pub async fn run(ctx: &Ctx, cmd: ShareCommand, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        ShareCommand::Create { account_name, name, key } => {
            let body = match key {
                Some(k) => json!({ "storageAccountKey": k }),
                None => json!({}),
            };
            let v = c.send(Method::PUT, &url(ctx, &account_name, &name), Some(&body)).await?.json()?;
            write_str(out, &pretty(&v))
        }
        ShareCommand::Show { account_name, name } => write_str(out, &pretty(&c.get_json(&url(ctx, &account_name, &name)).await?)),
        ShareCommand::List => {
            let v = c.get_json(&c.absolute("/skiff/v1/shares")).await?;
            write_str(out, &pretty(v.get("value").unwrap_or(&Value::Null)))
        }
        ShareCommand::Delete { account_name, name } => {
            c.send(Method::DELETE, &url(ctx, &account_name, &name), None).await?;
            Ok(())
        }
    }
}
