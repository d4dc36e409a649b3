//! The command line: clap definitions, one module per verb, rendering and exit codes.
//!
//! Exit codes: 0 success (for `plan`: no changes), 1 failure or invalid input, 2 `plan` found
//! changes. Errors are printed once, at the top, with their chain.

mod apply;
pub mod capacity;
mod common;
mod cordon;
mod drain;
mod events;
mod exec;
mod handoff;
mod history;
mod image;
mod logs;
mod network;
mod nodes;
mod plan;
mod plug;
mod remote;
mod render;

/// `plan`'s text, for the planner's unit tests.
#[cfg(test)]
pub(crate) fn plan_text_for_tests(plan: &crate::plan::Plan, nodes: &[String]) -> String {
    render::plan_text(plan, nodes)
}
mod run;
mod schema;
mod services;
mod state;
mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::images::Refresh;

/// fleetctl keeps a small fleet of VPS hosts running exactly what its manifests say.
///
/// It reads declarative YAML manifests (nodes, services, plug classes, placement policies),
/// reaches each node's Docker Engine over SSH, and converges the containers to that state:
/// once (`apply`) or continuously (`run`).
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// State database (SQLite). Default: $FLEETCTL_STATE, else one file per fleet,
    /// $XDG_STATE_HOME/fleetctl/FLEET.db (~/.local/state/fleetctl/FLEET.db); without manifests,
    /// the only fleet's file there.
    #[arg(long, global = true, env = "FLEETCTL_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// A controller running on another machine to hand plug and drain commands to
    /// (http://HOST:PORT of its API; the token in $FLEETCTL_TOKEN).
    #[arg(long, global = true, env = "FLEETCTL_CONTROLLER", value_name = "URL")]
    pub controller: Option<String>,
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Print less: results and errors only (no progress lines, notes or log below error).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of reading commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// A readable table.
    #[default]
    Table,
    /// A table with more columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The verbs of SPEC §5.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests and print every error with its location; changes nothing.
    Validate {
        /// Manifest file or directory.
        path: PathBuf,
    },
    /// Show what apply would do, per node; exit 0 no changes, 2 changes, 1 error.
    Plan {
        /// Manifest file or directory.
        path: PathBuf,
        /// Ask every image's registry which digest its tag names now, and show which moved.
        #[arg(long)]
        refresh: bool,
        /// Output format: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Converge the fleet to the manifests and wait until containers run (and are healthy).
    Apply {
        /// Manifest file or directory.
        path: PathBuf,
        /// Only show the plan (same as `plan`).
        #[arg(long)]
        dry_run: bool,
        /// Ask every image's registry which digest its tag names now; containers whose tag
        /// moved are replaced (without it, recorded digests hold, except for `pull: always`).
        #[arg(long)]
        refresh: bool,
        /// How long to wait for the fleet lease held by another actor.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        lock_timeout: std::time::Duration,
        /// How long, in all, to wait for containers to run and turn healthy.
        #[arg(long, value_parser = parse_duration, default_value = "2m")]
        timeout: std::time::Duration,
        /// Output format: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Run the controller: keep the fleet converged continuously.
    ///
    /// Takes the fleet lease (exit 1 if another actor holds it), watches PATH (an edit takes
    /// effect within a second; an invalid edit is logged and changes nothing), follows every
    /// node's engine events, restarts containers that die or turn unhealthy (backoff 1s doubling
    /// to 5m), re-places the plugs of nodes unreachable for nodeLostAfter, stops idle plugs and
    /// evicts the most idle ones under memory pressure, and serves the API on api.listen
    /// (bearer token; GET /healthz needs none). While it runs, apply, plug and drain hand their
    /// work to it. SIGTERM/SIGINT: finish the pass in flight, release the lease, exit 0.
    Run {
        /// Manifest file or directory (watched for changes).
        path: PathBuf,
    },
    /// List nodes, services or plugs.
    Get {
        /// What to list.
        #[arg(value_enum)]
        what: GetWhat,
        /// Manifest file or directory (default: the last applied set).
        path: Option<PathBuf>,
        /// Manifests to use instead of the last applied set (same as PATH).
        #[arg(
            short = 'f',
            long = "file",
            value_name = "PATH",
            conflicts_with = "path"
        )]
        file: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one node, service or plug in detail.
    Describe {
        /// What kind of object.
        #[arg(value_enum)]
        what: DescribeWhat,
        /// Its name (or plug id).
        name: String,
        /// Manifest file or directory (default: the last applied set).
        path: Option<PathBuf>,
        /// Manifests to use instead of the last applied set (same as PATH).
        #[arg(
            short = 'f',
            long = "file",
            value_name = "PATH",
            conflicts_with = "path"
        )]
        file: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Per node: allocatable memory and CPU, limits and reservations, headroom, plug slots free.
    Capacity {
        /// Manifest file or directory (default: the last applied set).
        path: Option<PathBuf>,
        /// Manifests to use instead of the last applied set (same as PATH).
        #[arg(
            short = 'f',
            long = "file",
            value_name = "PATH",
            conflicts_with = "path"
        )]
        file: Option<PathBuf>,
        /// Output format: table, wide (says what bounds every plug slot), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
        /// auto: observe the nodes once the fleet has been applied (else manifests only); live:
        /// always observe; offline: never contact the nodes.
        #[arg(long, value_enum, default_value_t)]
        source: capacity::Source,
    },
    /// Mark a node unschedulable: it takes no new work; what runs there stays. Undo: uncordon.
    Cordon(NodeArg),
    /// Make a cordoned or drained node schedulable again.
    Uncordon(NodeArg),
    /// Move every plug and movable replica off a node (start-first), then mark it drained.
    Drain {
        /// Node to drain.
        node: String,
        /// Give up after this long (what moved stays moved; re-run to continue).
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        timeout: std::time::Duration,
        /// Also stop containers that may run only on this node.
        #[arg(long)]
        force: bool,
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
        /// Output format: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Create, list, delete and touch plug instances (dynamic per-user containers).
    Plug {
        /// The plug operation.
        #[command(subcommand)]
        op: PlugOp,
    },
    /// Ship images to nodes without a registry.
    Image {
        /// The image operation.
        #[command(subcommand)]
        op: ImageOp,
    },
    /// List the revisions: every apply that converged, numbered, with when, who and what
    /// changed in one line; the one the fleet runs is marked "(in force)".
    ///
    /// A revision holds the manifests, the config files they read, the image digests and a
    /// keyed hash of each secret (never a value). `fleetctl rollback N` applies one again.
    History {
        /// Manifest file or directory naming the fleet (default: the only fleet's state).
        path: Option<PathBuf>,
        /// Manifests naming the fleet (same as PATH).
        #[arg(
            short = 'f',
            long = "file",
            value_name = "PATH",
            conflicts_with = "path"
        )]
        file: Option<PathBuf>,
        /// Output format: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Apply an earlier revision again (default: the previous one), plan shown first.
    ///
    /// Without REVISION: the one before the last when the last is in force, else the last
    /// (an apply that did not converge records no revision: back to the last good one).
    ///
    /// The revision's manifests and config files are applied from the state store, with the
    /// image digests it ran (even where a tag has moved) and the secrets' current values (a
    /// secret changed since is said). It asks on a terminal; without one it needs --yes. It
    /// runs like `apply` (the lease, or handed to a running controller) and is itself recorded
    /// as a revision. Your manifest files are not touched: applying them goes forward again.
    /// Exit 0 converged (or the revision is already in force), 1 otherwise; an unknown
    /// revision changes nothing.
    Rollback {
        /// The revision to apply again (see `fleetctl history`); default: the previous one.
        revision: Option<i64>,
        /// Roll back without asking.
        #[arg(short, long)]
        yes: bool,
        /// Manifests naming the fleet (its state file); default: the only fleet's state.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
        /// How long to wait for the fleet lease held by another actor.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        lock_timeout: std::time::Duration,
        /// How long, in all, to wait for containers to run and turn healthy.
        #[arg(long, value_parser = parse_duration, default_value = "2m")]
        timeout: std::time::Duration,
        /// Output format of the outcome: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show the state's event log (who, what, where, when, why), oldest first.
    ///
    /// `--service S` keeps the events about S and its containers (`FLEET-S-REPLICA-HASH`).
    /// `-f` prints what matches, then follows the log and every node's engine events of the
    /// fleet's containers (actor `engine`) until Ctrl-C; `-o json` then prints one object per
    /// line. Events older than the Fleet's `eventRetention` (default 90 days) are deleted.
    Events {
        /// Manifest file or directory (default: the last applied set).
        path: Option<PathBuf>,
        /// Manifests to use instead of the last applied set (same as PATH; `-f` is follow).
        #[arg(long = "file", value_name = "PATH", conflicts_with = "path")]
        file: Option<PathBuf>,
        /// Keep printing new events (of the log and of the nodes' engines) until Ctrl-C.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only events of the last DURATION: 90s, 10m, 1h, 2d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Only events of this node.
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// Only events about this service and its containers.
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        /// Output format: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Run a command in a running container of a service (or in a plug) and exit with its
    /// exit code.
    ///
    /// `--replica N` picks that replica; by default the lowest-numbered replica that runs.
    /// `-i` forwards stdin, `-t` allocates a TTY (window size passed through); `-it` on a
    /// terminal puts it in raw mode until the command ends. A command the container cannot run
    /// exits 126 (not executable) or 127 (not found), as with `docker exec`.
    Exec {
        /// SERVICE, or plug/ID.
        target: String,
        /// Which replica of the service (default: the lowest-numbered one running).
        #[arg(long, value_name = "N")]
        replica: Option<u32>,
        /// Keep stdin open and forward ours to the command.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Allocate a TTY for the command.
        #[arg(short = 't', long)]
        tty: bool,
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Print the log of every container of a service (or of a plug) on every node, merged in
    /// time order, each line prefixed `node/replica` (coloured on a terminal, not with
    /// NO_COLOR).
    ///
    /// `-f` goes on with new lines through restarts, re-creations and moves until Ctrl-C
    /// (exit 0). A node that cannot be reached is named on stderr; the others go on.
    /// `-o json` prints one object per line: time (RFC 3339, nanoseconds), node, container,
    /// replica, stream, line. Reads only; changes nothing.
    Logs {
        /// SERVICE, or plug/ID.
        target: String,
        /// Keep printing new lines until Ctrl-C.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines of the last DURATION: 90s, 10m, 1h, 2d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Only the last N lines of each container (then, with -f, the new ones).
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// Show each line's time (as the node's engine recorded it).
        #[arg(long)]
        timestamps: bool,
        /// Only the containers on this node.
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// Manifests to use instead of the last applied set (`-f` is follow).
        #[arg(long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
        /// Output: text lines, or one JSON object per line.
        #[arg(short, long, value_enum, default_value_t = LogFormat::Text)]
        output: LogFormat,
    },
    /// Show a node's SSH host key fingerprint and record it as trusted.
    Trust {
        /// Node to trust.
        node: String,
        /// Record without asking.
        #[arg(long)]
        yes: bool,
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Work on the state file itself (see docs/state.md).
    State {
        /// The state operation.
        #[command(subcommand)]
        action: StateAction,
    },
    /// Print a shell completion script.
    Completion {
        /// Shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the JSON Schema of the manifest kinds (for editors: yaml-language-server).
    Schema,
}

/// A node name argument, with the manifest override.
#[derive(Debug, Args)]
pub struct NodeArg {
    /// Node name.
    pub node: String,
    /// Manifests to use instead of the last applied set.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetWhat {
    /// Nodes: readiness, engine, capacity, use.
    Nodes,
    /// Services: replicas and where they run.
    Services,
    /// Plug instances.
    Plugs,
}

/// What `describe` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DescribeWhat {
    /// A node.
    Node,
    /// A service.
    Service,
    /// A plug instance.
    Plug,
    /// The fleet's network (NAME: its name, or `fleet`).
    Network,
}

/// Image operations.
#[derive(Debug, Subcommand)]
pub enum ImageOp {
    /// Stream IMAGE into the nodes that lack it, without a registry.
    ///
    /// The image comes from the local Docker engine (DOCKER_HOST when it is a unix:// socket,
    /// else /var/run/docker.sock) when that has it, else from a node that has it, and goes over
    /// the nodes' SSH connections as `docker save | docker load` would. Nodes that have it
    /// already are left alone. Prints one line per node (bytes, seconds, MB/s); exit 0 when
    /// every node asked has the image, 1 otherwise, naming the node and the cause. Undo: remove
    /// the image on the node (`docker image rm`); fleetctl records nothing.
    Push {
        /// Image: a tag (`repository:tag`) as `docker images` shows it.
        image: String,
        /// Push only to this node (repeat for more). Default: every node of the fleet.
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// Plug operations.
#[derive(Debug, Subcommand)]
pub enum PlugOp {
    /// Place and start a new plug instance of CLASS for OWNER; prints id, node, host:port.
    Create {
        /// Plug class.
        class: String,
        /// Owner (user) of the instance.
        #[arg(long)]
        owner: String,
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
        /// Output format: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Delete a plug instance: its container is removed and its port freed.
    Delete {
        /// Plug id.
        id: String,
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Record activity on a plug (starts it again if it was stopped or evicted).
    Touch {
        /// Plug id.
        id: String,
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// List plug instances.
    List {
        /// Manifests to use instead of the last applied set.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// State operations.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Rebuild the state's records of the fleet from its nodes: adopt every plug running (or
    /// stopped) there that the state does not know, with its owner, node and port.
    ///
    /// Changes no container and takes no fleet lease. Reports the plugs adopted, those already
    /// known, plug containers that cannot be adopted and why (left alone), the nodes that could
    /// not be seen, and what no node can give back (the event log, plugs' last activity, the
    /// applied-manifest history). Exit 0 when every node was seen, 1 otherwise.
    Rebuild {
        /// Manifest file or directory (default: the last applied set).
        path: Option<PathBuf>,
        /// Output format: table (wide is the same), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Parses a humantime duration (`30s`, `5m`, `1h30m`) for command-line flags.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 30s, 5m, 1h30m)"))
}

/// Sets up tracing on stderr according to the global options. `run` logs at `info` unless told
/// otherwise (it is a daemon: its log is its output); other commands at `warn`.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let global = &cli.global;
    let daemon = matches!(cli.command, Command::Run { .. });
    let default = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 if daemon => "fleetctl=info,warn",
            0 => "warn",
            // fleetctl's own spans and events; the libraries' only at -vvv.
            1 => "fleetctl=info,warn",
            2 => "fleetctl=debug,warn",
            _ => "trace",
        }
    };
    let filter = global
        .log_level
        .as_deref()
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_from_env("FLEETCTL_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    // A cap on top of whatever level was asked: bollard logs request bodies and decoded
    // answers at debug (a create body and an inspect carry secret variables' values, SPEC §12)
    // and russh's trace carries channel data; neither may reach a log.
    let cap = tracing_subscriber::filter::filter_fn(|m| {
        let t = m.target();
        !((t.starts_with("bollard") && *m.level() > tracing::Level::INFO)
            || (t.starts_with("russh") && *m.level() > tracing::Level::DEBUG))
    });
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    // From -vv each span (a plug create's phases, an SSH connect, one engine call) says when it
    // closes and how long it took: where the time goes, without a profiler.
    let span_events = if global.verbose >= 2 {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_span_events(span_events)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    let _ = match global.log_format {
        LogFormat::Json => registry
            .with(layer.json().with_filter(filter).with_filter(cap))
            .try_init(),
        LogFormat::Text => registry
            .with(layer.with_filter(filter).with_filter(cap))
            .try_init(),
    };
}

/// Runs one parsed command line; returns the process exit code.
///
/// # Errors
/// Any failure that is not an expected outcome with its own exit code; the caller prints the
/// chain once and exits 1.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    common::set_quiet(cli.global.quiet);
    match cli.command {
        Command::Validate { path } => validate::run(&path),
        Command::Schema => schema::run(),
        Command::Capacity {
            path,
            file,
            output,
            source,
        } => capacity::run(path.or(file).as_deref(), source, output, &cli.global),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "fleetctl", &mut buf);
            common::emit(&String::from_utf8_lossy(&buf))?;
            Ok(0)
        }
        Command::Plan {
            path,
            refresh,
            output,
        } => plan::run(&path, output, Refresh::asked(refresh), &cli.global),
        Command::Apply {
            path,
            dry_run,
            refresh,
            lock_timeout,
            timeout,
            output,
        } => {
            if dry_run {
                plan::run(&path, output, Refresh::asked(refresh), &cli.global)
            } else {
                apply::run(
                    &path,
                    lock_timeout,
                    timeout,
                    output,
                    Refresh::asked(refresh),
                    &cli.global,
                )
            }
        }
        Command::Run { path } => run::run(&path, &cli.global),
        Command::Get {
            what: GetWhat::Nodes,
            path,
            file,
            output,
        } => nodes::get(path.or(file).as_deref(), output, &cli.global),
        Command::Get {
            what: GetWhat::Plugs,
            path,
            file,
            output,
        } => plug::list(path.or(file).as_deref(), output, &cli.global),
        Command::Get {
            what: GetWhat::Services,
            path,
            file,
            output,
        } => services::get(path.or(file).as_deref(), output, &cli.global),
        Command::Describe {
            what: DescribeWhat::Service,
            name,
            path,
            file,
            output,
        } => services::describe_service(&name, path.or(file).as_deref(), output, &cli.global),
        Command::Describe {
            what: DescribeWhat::Plug,
            name,
            path,
            file,
            output,
        } => services::describe_plug(&name, path.or(file).as_deref(), output, &cli.global),
        Command::Describe {
            what: DescribeWhat::Node,
            name,
            path,
            file,
            output,
        } => nodes::describe(&name, path.or(file).as_deref(), output, &cli.global),
        Command::Describe {
            what: DescribeWhat::Network,
            name,
            path,
            file,
            output,
        } => network::describe(&name, path.or(file).as_deref(), output, &cli.global),
        Command::Cordon(a) => cordon::run(&a.node, a.file.as_deref(), true, &cli.global),
        Command::Uncordon(a) => cordon::run(&a.node, a.file.as_deref(), false, &cli.global),
        Command::Drain {
            node,
            timeout,
            force,
            file,
            output,
        } => drain::run(&node, timeout, force, file.as_deref(), output, &cli.global),
        Command::Plug { op } => plug::run(op, &cli.global),
        Command::Image {
            op: ImageOp::Push { image, nodes, file },
        } => image::push(&image, &nodes, file.as_deref(), &cli.global),
        Command::State { action } => state::run(action, &cli.global),
        Command::Events {
            path,
            file,
            follow,
            since,
            node,
            service,
            output,
        } => events::run(
            path.or(file).as_deref(),
            follow,
            since,
            node,
            service,
            output,
            &cli.global,
        ),
        Command::Exec {
            target,
            replica,
            interactive,
            tty,
            file,
            cmd,
        } => exec::run(
            &target,
            replica,
            interactive,
            tty,
            file.as_deref(),
            &cmd,
            &cli.global,
        ),
        Command::Logs {
            target,
            follow,
            since,
            tail,
            timestamps,
            node,
            file,
            output,
        } => logs::run(
            &target,
            follow,
            since,
            tail,
            timestamps,
            node,
            file.as_deref(),
            output,
            &cli.global,
        ),
        Command::History { path, file, output } => {
            history::history(path.or(file).as_deref(), output, &cli.global)
        }
        Command::Rollback {
            revision,
            yes,
            file,
            lock_timeout,
            timeout,
            output,
        } => history::rollback(
            &history::RollbackArgs {
                path: file.as_deref(),
                revision,
                yes,
                lock_timeout,
                timeout,
                output,
            },
            &cli.global,
        ),
        Command::Trust { node, yes, file } => {
            nodes::trust(&node, file.as_deref(), yes, &cli.global)
        }
    }
}
