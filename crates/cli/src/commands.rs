//! The subcommands: argument handling, HTTP calls through [`Client`], output through
//! [`crate::output`].

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::build::{self, build_group, parse_document, prepare_file_document};
use crate::client::{Client, LroOutcome, Response, ACI_API_VERSION};
use crate::config::{self, Settings};
use crate::error::CliError;
use crate::output;
use crate::progress::Progress;
use crate::{BenchCommand, Cli, Command, ContainerCommand, CreateArgs, GroupCommand, GroupRef, OutputFormat};

/// Everything a command needs.
pub struct Ctx {
    pub client: Client,
    pub settings: Settings,
    pub format: OutputFormat,
    /// `--query`: a JMESPath expression applied to printed resources.
    pub query: Option<String>,
    /// Whether progress may be drawn (it still is only on a terminal).
    pub progress: bool,
}

impl Ctx {
    pub fn from_cli(cli: &Cli) -> Result<Self, CliError> {
        let file = config::load_config(config::config_path().as_deref())?;
        let mut settings = config::resolve(cli.server.clone(), cli.subscription.clone(), cli.debug, &file);
        config::resolve_credentials(&mut settings, cli.token.clone(), cli.ca_cert.clone(), &file, &config::local_data_dir());
        let client = Client::new(&settings)?;
        if let Some(q) = &cli.query {
            output::check_query(q)?;
        }
        Ok(Ctx { client, settings, format: cli.output.unwrap_or(OutputFormat::Table), query: cli.query.clone(), progress: true })
    }

    /// `v` as the command prints it: through `--query` if one was given, else by `render`.
    pub fn render(&self, v: &Value, render: impl FnOnce(&Value, OutputFormat) -> Result<String, CliError>) -> Result<String, CliError> {
        match &self.query {
            Some(q) => output::render_query(v, q, self.format),
            None => render(v, self.format),
        }
    }
}

pub async fn dispatch(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let ctx = Ctx::from_cli(&cli)?;
    match cli.command {
        Command::Server(_) | Command::Supervisor(_) => {
            Err(CliError::usage("`skiff server`/`skiff supervisor` are run by the skiff binary, not by the client library"))
        }
        Command::Group(cmd) => group_command(&ctx, cmd, out).await,
        Command::Container(cmd) => container_command(&ctx, cmd, out).await,
        Command::Bench(BenchCommand::Create(args)) => crate::bench::run(&ctx, &args, out).await,
        Command::Bench(BenchCommand::ColdStart(args)) => crate::bench_suite::cold_start(&ctx, &args, out).await,
        Command::Bench(BenchCommand::Burst(args)) => crate::bench_suite::burst(&ctx, &args, out).await,
        Command::Bench(BenchCommand::Density(args)) => crate::bench_suite::density(&ctx, &args, out).await,
        Command::Bench(BenchCommand::Api(args)) => crate::bench_suite::api(&ctx, &args, out).await,
        Command::Bench(BenchCommand::WaitAll(args)) => crate::bench_suite::wait_all(&ctx, &args, out).await,
        Command::Bench(BenchCommand::Pull(args)) => crate::bench_suite::pull(&ctx, &args, out).await,
        Command::Share(cmd) => crate::shares::run(&ctx, cmd, out).await,
        Command::Usage(args) => crate::metering::usage(&ctx, &args, out).await,
        Command::Events(args) => crate::metering::events(&ctx, &args, out).await,
        Command::Token(cmd) => crate::tokens::run(&ctx, cmd, out).await,
        Command::Network(cmd) => crate::network::run(&ctx, cmd, out).await,
    }
}

// ---------------------------------------------------------------------------------------------
// az group

async fn group_command(ctx: &Ctx, cmd: GroupCommand, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        GroupCommand::Create { name, location } => {
            let location = location.unwrap_or_else(|| ctx.settings.location.clone());
            let r = c.send(Method::PUT, &c.rg_url(&name), Some(&json!({ "location": location }))).await?;
            write_str(out, &ctx.render(&r.json()?, output::render_rg)?)
        }
        GroupCommand::Show { name } => {
            let rg = c.get_json(&c.rg_url(&name)).await?;
            write_str(out, &ctx.render(&rg, output::render_rg)?)
        }
        GroupCommand::List => {
            let items = c.list_all(&c.rg_list_url(), crate::client::RG_API_VERSION).await?;
            write_str(out, &ctx.render(&Value::Array(items), |v, f| output::render_rg_list(v.as_array().map(Vec::as_slice).unwrap_or_default(), f))?)
        }
        GroupCommand::Delete { name, yes, no_wait } => {
            if !yes && !confirm(&format!("Are you sure you want to delete resource group '{name}' and everything in it?"))? {
                return Ok(());
            }
            let r = c.send(Method::DELETE, &c.rg_url(&name), None).await?;
            if !no_wait {
                let outcome = c.wait(&Method::DELETE, &r, None, &mut |_| {}).await?;
                if outcome != LroOutcome::Succeeded {
                    return Err(outcome.into_error("delete"));
                }
            }
            Ok(())
        }
    }
}

/// Make sure the resource group exists; return its location. Creates it (Skiff convenience;
/// az would fail) in `location`, else the configured default location.
pub async fn ensure_resource_group(ctx: &Ctx, rg: &str, location: Option<&str>) -> Result<String, CliError> {
    let c = &ctx.client;
    match c.get_json(&c.rg_url(rg)).await {
        Ok(v) => Ok(v
            .get("location")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| location.map(str::to_string))
            .unwrap_or_else(|| ctx.settings.location.clone())),
        Err(e) if e.is_not_found() => {
            let loc = location.map(str::to_string).unwrap_or_else(|| ctx.settings.location.clone());
            c.send(Method::PUT, &c.rg_url(rg), Some(&json!({ "location": loc }))).await?;
            eprintln!("Resource group '{rg}' did not exist: created it in location '{loc}'.");
            Ok(loc)
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// az container

async fn container_command(ctx: &Ctx, cmd: ContainerCommand, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        ContainerCommand::Create(args) => create(ctx, &args, out).await,
        ContainerCommand::Show(g) => {
            let v = c.get_json(&c.group_url(&g.resource_group, &g.name)).await?;
            write_str(out, &ctx.render(&v, |v, f| output::render_group(v, f, true))?)
        }
        ContainerCommand::List { resource_group } => {
            let items = c.list_all(&c.list_url(resource_group.as_deref()), ACI_API_VERSION).await?;
            write_str(out, &ctx.render(&Value::Array(items), |v, f| output::render_group_list(v.as_array().map(Vec::as_slice).unwrap_or_default(), f))?)
        }
        ContainerCommand::Logs { group, container_name, tail, timestamps, follow } => {
            if follow {
                match crate::exec::follow(ctx, &group, container_name.clone(), tail, timestamps, out).await {
                    // A server without the streaming extension: poll like az does.
                    Err(e) if matches!(e.status(), Some(404 | 501)) => {}
                    other => return other,
                }
            }
            logs(ctx, &group, container_name, tail, timestamps, follow, out).await
        }
        ContainerCommand::Exec { group, container_name, exec_command } => {
            crate::exec::exec(ctx, &group, container_name, &exec_command, out).await
        }
        ContainerCommand::Attach { group, container_name, no_stdin } => crate::exec::attach(ctx, &group, container_name, !no_stdin, out).await,
        ContainerCommand::Start { group, no_wait } => action(ctx, &group, "start", no_wait, "Starting").await,
        ContainerCommand::Restart { group, no_wait } => action(ctx, &group, "restart", no_wait, "Restarting").await,
        ContainerCommand::Stop { group } => {
            c.send(Method::POST, &c.group_action_url(&group.resource_group, &group.name, "stop"), None).await?;
            Ok(())
        }
        ContainerCommand::Delete { group, yes, no_wait } => {
            if !yes && !confirm(&format!("Are you sure you want to delete container group '{}'?", group.name))? {
                return Ok(());
            }
            let url = c.group_url(&group.resource_group, &group.name);
            let r = c.send(Method::DELETE, &url, None).await?;
            if !no_wait && r.status == 202 {
                let mut progress = Progress::new(ctx.progress, &format!("Deleting container group '{}'", group.name));
                let outcome = c.wait(&Method::DELETE, &r, None, &mut |_| {}).await;
                progress.clear();
                let outcome = outcome?;
                if outcome != LroOutcome::Succeeded {
                    return Err(outcome.into_error("delete"));
                }
            }
            // az prints the deleted group (200 + body); 204 means there was nothing to delete.
            let body = r.json()?;
            if body.is_object() && (ctx.format != OutputFormat::Table || ctx.query.is_some()) {
                write_str(out, &ctx.render(&body, |v, f| output::render_group(v, f, false))?)?;
            }
            Ok(())
        }
        ContainerCommand::Export { group, file } => {
            let v = c.get_json(&c.generic_group_url(&group.resource_group, &group.name, ACI_API_VERSION)).await?;
            let doc = build::export_document(&v, ACI_API_VERSION);
            let yaml = build::to_yaml(&doc)?;
            std::fs::write(&file, yaml).map_err(|e| CliError::usage(format!("cannot write {}: {e}", file.display())))?;
            Ok(())
        }
        ContainerCommand::Metrics(args) => crate::metrics::container_metrics(ctx, &args, out).await,
    }
}

/// The body, URL and name of a create, from flags or `--file`.
pub struct CreateRequest {
    pub name: String,
    pub url: String,
    pub body: Value,
}

/// Validate the create arguments (reading `--file`) before anything is sent.
fn prepare_create(ctx: &Ctx, args: &CreateArgs) -> Result<(String, Option<build::FileDeployment>), CliError> {
    match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
            let mut doc = parse_document(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
            if crate::pod::is_pod(&doc) {
                doc = crate::pod::pod_to_group(&doc).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
            }
            let d = prepare_file_document(doc, args.name.as_deref(), args.location.as_deref())?;
            Ok((d.name.clone(), Some(d)))
        }
        None => {
            let name = args.name.clone().ok_or_else(|| CliError::usage("--name/-n is required (unless --file names the group)"))?;
            // Validate now so that a bad flag does not create the resource group first.
            build_group(args, &name, &ctx.settings.location)?;
            Ok((name, None))
        }
    }
}

async fn create(ctx: &Ctx, args: &CreateArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let c = &ctx.client;
    let rg = &args.resource_group;
    let (name, file) = prepare_create(ctx, args)?;
    let file_location = file.as_ref().and_then(|d| d.body.get("location")).and_then(Value::as_str).map(str::to_string);
    let rg_location = ensure_resource_group(ctx, rg, args.location.as_deref().or(file_location.as_deref())).await?;
    let location = args.location.clone().unwrap_or(rg_location);
    let req = match file {
        Some(mut d) => {
            if let Some(obj) = d.body.as_object_mut() {
                if !matches!(obj.get("location"), Some(Value::String(s)) if !s.is_empty()) {
                    obj.insert("location".into(), Value::String(location.clone()));
                }
            }
            CreateRequest { url: c.generic_group_url(rg, &d.name, &d.api_version), name: d.name, body: d.body }
        }
        None => {
            let g = build_group(args, &name, &location)?;
            let body = serde_json::to_value(&g).map_err(|e| CliError::usage(e.to_string()))?;
            CreateRequest { url: c.group_url(rg, &name), name, body }
        }
    };
    let resp = c.send(Method::PUT, &req.url, Some(&req.body)).await?;
    if args.no_wait {
        if ctx.format != OutputFormat::Table || ctx.query.is_some() {
            let body = resp.json()?;
            if body.is_object() {
                write_str(out, &ctx.render(&body, |v, f| output::render_group(v, f, false))?)?;
            }
        }
        return Ok(());
    }
    let outcome = wait_with_progress(ctx, &Method::PUT, &resp, &c.group_url(rg, &req.name), &format!("Creating container group '{}'", req.name)).await?;
    finish_with_group(ctx, rg, &req.name, outcome, "create", true, out).await
}

async fn wait_with_progress(ctx: &Ctx, method: &Method, resp: &Response, resource_url: &str, message: &str) -> Result<LroOutcome, CliError> {
    let mut progress = Progress::new(ctx.progress, message);
    let res = ctx.client.wait(method, resp, Some(resource_url), &mut |op| progress.update(op)).await;
    progress.clear();
    res
}

/// After an operation: on success print the group (if `print`); on failure print the error
/// and the group's events to stderr and fail.
async fn finish_with_group(
    ctx: &Ctx,
    rg: &str,
    name: &str,
    outcome: LroOutcome,
    what: &str,
    print: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let c = &ctx.client;
    match outcome {
        LroOutcome::Succeeded => {
            if print {
                let g = c.get_json(&c.group_url(rg, name)).await?;
                write_str(out, &ctx.render(&g, |v, f| output::render_group(v, f, true))?)?;
            }
            Ok(())
        }
        failed => {
            eprintln!("error: {}", failed.clone().into_error(what));
            if let Ok(g) = c.get_json(&c.group_url(rg, name)).await {
                let containers = output::container_lines(&g);
                if !containers.is_empty() {
                    eprintln!("Containers:");
                    for l in containers {
                        eprintln!("  {l}");
                    }
                }
                let events = output::event_lines(&g);
                if !events.is_empty() {
                    eprintln!("Events:");
                    for l in events {
                        eprintln!("  {l}");
                    }
                }
            }
            Err(CliError::Silent)
        }
    }
}

async fn action(ctx: &Ctx, g: &GroupRef, verb: &str, no_wait: bool, message: &str) -> Result<(), CliError> {
    let c = &ctx.client;
    let resp = c.send(Method::POST, &c.group_action_url(&g.resource_group, &g.name, verb), None).await?;
    if no_wait {
        return Ok(());
    }
    let outcome = wait_with_progress(ctx, &Method::POST, &resp, &c.group_url(&g.resource_group, &g.name), &format!("{message} container group '{}'", g.name)).await?;
    let mut sink = std::io::sink();
    finish_with_group(ctx, &g.resource_group, &g.name, outcome, verb, false, &mut sink).await
}

// ---------------------------------------------------------------------------------------------
// logs

/// The part of `new` not yet printed when `old` was (all of `new` if the log was reset).
pub fn new_part<'a>(old: &str, new: &'a str) -> &'a str {
    new.strip_prefix(old).unwrap_or(new)
}

/// The last `n` lines of `s` (a trailing newline does not count as an extra line).
pub fn last_lines(s: &str, n: u64) -> &str {
    if n == 0 {
        return "";
    }
    let body = s.strip_suffix('\n').unwrap_or(s);
    let mut count = 0u64;
    for (i, b) in body.bytes().enumerate().rev() {
        if b == b'\n' {
            count += 1;
            if count == n {
                return &s[i + 1..];
            }
        }
    }
    s
}

/// `logs --follow` stops when the group is Succeeded/Failed/Stopped, or the restart policy is
/// not Always and the container terminated (az's rule, plus Stopped).
pub fn follow_done(group: &Value, container: &str) -> bool {
    let state = group.pointer("/properties/instanceView/state").and_then(Value::as_str).unwrap_or("");
    if matches!(state, "Succeeded" | "Failed" | "Stopped") {
        return true;
    }
    let policy = group.pointer("/properties/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    if policy.eq_ignore_ascii_case("Always") {
        return false;
    }
    group
        .pointer("/properties/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        .and_then(|c| c.pointer("/properties/instanceView/currentState/state"))
        .and_then(Value::as_str)
        == Some("Terminated")
}

async fn logs(
    ctx: &Ctx,
    g: &GroupRef,
    container: Option<String>,
    tail: Option<u64>,
    timestamps: bool,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let c = &ctx.client;
    let group_url = c.group_url(&g.resource_group, &g.name);
    let group = c.get_json(&group_url).await?;
    let container = match container {
        Some(n) => n,
        None => group
            .pointer("/properties/containers/0/name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CliError::usage(format!("container group '{}' has no containers", g.name)))?,
    };
    let logs_url = |tail: Option<u64>| {
        let mut u = c.group_action_url(&g.resource_group, &g.name, &format!("containers/{container}/logs"));
        if let Some(t) = tail {
            u.push_str(&format!("&tail={t}"));
        }
        if timestamps {
            u.push_str("&timestamps=true");
        }
        u
    };
    let content = |v: Value| v.get("content").and_then(Value::as_str).unwrap_or("").to_string();
    if !follow {
        let text = content(c.get_json(&logs_url(tail)).await?);
        return write_str(out, &text);
    }
    let mut last = content(c.get_json(&logs_url(None)).await?);
    write_str(out, match tail {
        Some(n) => last_lines(&last, n),
        None => &last,
    })?;
    let mut done = follow_done(&group, &container);
    loop {
        if !done {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let cur = content(c.get_json(&logs_url(None)).await?);
        write_str(out, new_part(&last, &cur))?;
        last = cur;
        if done {
            return Ok(());
        }
        // One more fetch after the group turns terminal, for the last lines.
        done = follow_done(&c.get_json(&group_url).await?, &container);
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

pub fn write_str(out: &mut (dyn Write + Send), s: &str) -> Result<(), CliError> {
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // `skiff … | head`: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Ask on the terminal; refuse when stdin is not a terminal.
fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage("refusing to delete without confirmation: stdin is not a terminal (pass --yes)"));
    }
    eprint!("{question} (y/n): ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let yes = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    if !yes {
        eprintln!("Operation cancelled.");
    }
    Ok(yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_diffs() {
        assert_eq!(new_part("a\nb\n", "a\nb\nc\n"), "c\n");
        assert_eq!(new_part("a\n", "a\n"), "");
        assert_eq!(new_part("old\n", "new\n"), "new\n");
        assert_eq!(last_lines("1\n2\n3\n", 2), "2\n3\n");
        assert_eq!(last_lines("1\n2\n3", 2), "2\n3");
        assert_eq!(last_lines("1\n2\n", 5), "1\n2\n");
        assert_eq!(last_lines("1\n2\n", 0), "");
    }

    #[test]
    fn follow_stops_like_az() {
        let g = |state: &str, policy: &str, cstate: &str| {
            json!({"properties": {"restartPolicy": policy, "instanceView": {"state": state},
                "containers": [{"name": "c", "properties": {"instanceView": {"currentState": {"state": cstate}}}}]}})
        };
        assert!(!follow_done(&g("Running", "Always", "Running"), "c"));
        assert!(!follow_done(&g("Running", "Always", "Terminated"), "c"));
        assert!(follow_done(&g("Running", "Never", "Terminated"), "c"));
        assert!(!follow_done(&g("Running", "Never", "Terminated"), "other"));
        assert!(follow_done(&g("Succeeded", "Always", "Terminated"), "c"));
        assert!(follow_done(&g("Stopped", "Always", "Terminated"), "c"));
    }
}
