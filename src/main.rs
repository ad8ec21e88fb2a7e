//! The `switchyard` command line: serve, check, route, print-config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::broker::Broker;
use switchyard::channel::ChannelName;
use switchyard::config::{Config, DEFAULT_CONFIG};

/// jemalloc, configured at build time (.cargo/config.toml) to give freed memory back.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `print!` for the command's output: when the reader has gone (`switchyard print-config |
/// head`), the command ends quietly with what it wrote instead of panicking on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            output_failed(&e);
        }
    }};
}

/// [`say!`] with a line break.
macro_rules! sayln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            output_failed(&e);
        }
    }};
}

/// Ends the process when stdout fails: silently for a closed pipe (the reader has what it
/// wanted), otherwise saying why.
fn output_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write the output: {e}");
    std::process::exit(1);
}

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A WebSocket messaging broker for chat/IM and real-time apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (no --config: the built-in development default).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// `text` for people, `json` (one object per line) for log collectors.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a config file and warn about rules that can never match or never be used.
    Check {
        /// The config file (or give it with --config).
        #[arg(value_name = "FILE", required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show which rule a channel hits, its backend channel and who may use it.
    Route {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Evaluate permissions for this user (a token's `sub`); default: anonymous.
        #[arg(long)]
        user: Option<String>,
        channel: String,
    },
    /// Print the built-in default config.
    PrintConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::Check { file, config } => match file.or(config) {
            Some(path) => check(&path),
            None => {
                eprintln!("error: give a config file: switchyard check FILE");
                ExitCode::from(2)
            }
        },
        Command::Route { config, user, channel } => route(config, user.as_deref(), &channel),
        Command::PrintConfig => {
            say!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let loaded = match path {
        Some(p) => Config::load(p),
        None => Config::builtin(),
    };
    loaded.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn serve(path: Option<PathBuf>, format: LogFormat) -> ExitCode {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Json => logs.json().init(),
        // Colours only for a person at a terminal, not in files and journals.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let config = match load(path.as_ref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if path.is_none() {
            tracing::warn!("no --config given: serving the built-in development default (anonymous clients may use every channel)");
        }
        let handle = match Broker::start(config).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(p) = path {
            tokio::spawn(switchyard::reload::watch(handle.reloader(), p));
        }
        switchyard::shutdown::signal().await;
        tracing::info!("shutting down: closing clients with 1001");
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// A route's history settings, as `check` and `route` print them.
fn describe_history(r: &switchyard::routing::Route) -> String {
    match &r.history {
        None => "none (history_size = 0)".to_string(),
        Some(h) => format!(
            "{} messages per channel, kept {} s after the last publish; recovery up to {}",
            h.retention.size,
            h.retention.ttl.as_secs(),
            h.recovery_max
        ),
    }
}

/// A route's presence settings, as `check` and `route` print them.
fn describe_presence(r: &switchyard::routing::Route) -> String {
    match &r.presence {
        None => "none (presence = false)".to_string(),
        Some(p) => format!(
            "members listed, a dead node's gone within {} s; join/leave diffs {}",
            p.ttl.as_secs(),
            if p.join_leave { "on" } else { "off" }
        ),
    }
}

fn check(path: &PathBuf) -> ExitCode {
    let config = match load(Some(path)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let routes = config.rules.routes();
    for (shadowed, by) in config.rules.shadowed() {
        sayln!(
            "warning: {}: routes[{shadowed}] (match = {:?}) can never match: routes[{by}] (match = {:?}) matches every channel it does",
            path.display(),
            routes[shadowed].pattern.source(),
            routes[by].pattern.source()
        );
    }
    if routes.is_empty() {
        sayln!("warning: {}: no [[routes]]: every channel gets no_route", path.display());
    }
    if !config.auth.has_jwt() {
        for r in routes {
            if let Some(why) = needs_a_user(r) {
                sayln!(
                    "warning: {}: routes[{}] (match = {:?}): {why}, but [auth] configures no JWT key, so every client is anonymous and nobody can; set auth.jwt_hs256_secret_env (or another JWT key) or use \"anyone\"",
                    path.display(),
                    r.index,
                    r.pattern.source(),
                );
            }
        }
    }
    for r in routes.iter().filter(|r| r.history.is_some()) {
        sayln!(
            "history: routes[{}] (match = {:?}): {}",
            r.index,
            r.pattern.source(),
            describe_history(r)
        );
    }
    for r in routes.iter().filter(|r| r.presence.is_some()) {
        sayln!(
            "presence: routes[{}] (match = {:?}): {}",
            r.index,
            r.pattern.source(),
            describe_presence(r)
        );
    }
    sayln!("ok: {}: {} routes, {} backends", path.display(), routes.len(), config.backends.len());
    ExitCode::SUCCESS
}

/// What a route lets only signed-in users do (`subscribe = authenticated`, ...), if anything.
fn needs_a_user(r: &switchyard::routing::Route) -> Option<String> {
    use switchyard::routing::Permission;
    let needs = |p: &Permission| matches!(p, Permission::Authenticated | Permission::UserIs { .. });
    let ops: Vec<String> = [("subscribe", &r.subscribe), ("publish", &r.publish)]
        .into_iter()
        .filter(|(_, p)| needs(p))
        .map(|(op, p)| format!("{op} = \"{p}\""))
        .collect();
    let verb = if ops.len() > 1 { "need" } else { "needs" };
    (!ops.is_empty()).then(|| format!("{} {verb} a signed-in user", ops.join(" and ")))
}

fn route(path: Option<PathBuf>, user: Option<&str>, channel: &str) -> ExitCode {
    let config = match load(path.as_ref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let name = match ChannelName::parse(channel) {
        Ok(n) => n,
        Err(e) => {
            sayln!("invalid_channel: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(resolved) = config.rules.resolve(&name) else {
        sayln!("no_route: no rule in {} matches {name}", config.source);
        return ExitCode::from(1);
    };
    let r = resolved.route;
    let backend = &config.backends[r.backend];
    let who = user.map_or("anonymous".to_string(), |u| format!("user {u:?}"));
    let verdict = |allowed: bool| if allowed { "allowed" } else { "denied" };
    sayln!("channel:           {name}");
    sayln!(
        "rule:              routes[{}] match = {:?} ({})",
        r.index,
        r.pattern.source(),
        config.source
    );
    let captures = resolved.named_captures();
    if captures.is_empty() {
        sayln!("captures:          none");
    } else {
        let shown: Vec<String> = captures.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        sayln!("captures:          {}", shown.join(", "));
    }
    sayln!("backend:           {} ({})", backend.name, backend.kind.name());
    sayln!("backend channel:   {}", resolved.backend_channel(&name));
    if let Some(why) = resolved.refusal() {
        sayln!("refused:           {why}");
    }
    sayln!(
        "subscribe:         {} -> {} for {who}",
        r.subscribe,
        verdict(resolved.may_subscribe(user))
    );
    sayln!("publish:           {} -> {} for {who}", r.publish, verdict(resolved.may_publish(user)));
    sayln!("max_message_bytes: {}", r.max_message_bytes);
    sayln!("history:           {}", describe_history(r));
    sayln!("presence:          {}", describe_presence(r));
    ExitCode::SUCCESS
}
