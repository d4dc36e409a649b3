//! `fleetctl logs SERVICE|plug/ID [-f] [--since D] [--tail N] [--timestamps] [--node N]
//! [-o json]` (SPEC §13): every container of a service (or a plug) on every node, merged in
//! time order by [`crate::logs::read`], each line prefixed `node/replica` (coloured per
//! container on a terminal, unless `NO_COLOR` is set), or one JSON object per line.
//!
//! An unknown service or node is refused before any node is reached. Ctrl-C ends `-f` with
//! exit 0.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use super::common::{connect_all, resolve_manifests};
use super::{GlobalOpts, LogFormat};
use crate::logs::{Emit, LogsError, Request, Source, Target};
use crate::transport::LogLine;
use crate::transport::logs::format_rfc3339_ns;

/// Prefix colours, one per container in the order they first print (ANSI: cyan, yellow,
/// green, magenta, blue, red), as `docker compose logs` does.
const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// How one line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Keep the engine's timestamp in the text (always in JSON).
    pub timestamps: bool,
    /// Colour the prefix.
    pub color: bool,
}

/// The text of one line: `node1/web-1 | TEXT` (`| TIME TEXT` with `--timestamps`), the
/// prefix coloured with `color` (an index into [`COLORS`]) when the style says so; or the JSON
/// object `{time, node, container, replica, stream, line}`. Ends with a newline.
pub fn render(style: Style, source: &Source, line: &LogLine, color: usize) -> String {
    if style.json {
        let v = serde_json::json!({
            "time": format_rfc3339_ns(line.time_ns),
            "node": source.node,
            "container": source.container,
            "replica": source.replica,
            "stream": line.stream,
            "line": line.text,
        });
        return format!("{v}\n");
    }
    let prefix = source.prefix();
    let prefix = if style.color {
        format!("\x1b[{}m{prefix} |\x1b[0m", COLORS[color % COLORS.len()])
    } else {
        format!("{prefix} |")
    };
    if style.timestamps {
        format!(
            "{prefix} {} {}\n",
            format_rfc3339_ns(line.time_ns),
            line.text
        )
    } else {
        format!("{prefix} {}\n", line.text)
    }
}

/// Whether to colour: stdout is a terminal and `NO_COLOR` is unset or empty.
fn use_color() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Checks what can be checked without a node: the service exists, the node exists.
///
/// # Errors
/// `unknown service api (known: db, web)`, `unknown node n9 (known: node1, node2)`.
pub fn check(
    target: &Target,
    node: Option<&str>,
    services: &BTreeSet<String>,
    nodes: &BTreeSet<String>,
) -> anyhow::Result<()> {
    if let Target::Service(name) = target {
        super::exec::known_service(name, services)?;
    }
    if let Some(n) = node
        && !nodes.contains(n)
    {
        let known: Vec<&str> = nodes.iter().map(String::as_str).collect();
        bail!("unknown node {n} (known: {})", known.join(", "));
    }
    Ok(())
}

/// `fleetctl logs`.
///
/// # Errors
/// Invalid manifests; an unknown service, node or plug; stdout failing (a closed pipe is not
/// an error: the reader has what it wanted).
#[allow(clippy::too_many_arguments)] // one per flag of the verb
pub fn run(
    target: &str,
    follow: bool,
    since: Option<Duration>,
    tail: Option<u64>,
    timestamps: bool,
    node: Option<String>,
    file: Option<&Path>,
    format: LogFormat,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(file, global)?;
    let fleet = &loaded.fleet;
    let services: BTreeSet<String> = fleet.services.keys().cloned().collect();
    let nodes: BTreeSet<String> = fleet.nodes.keys().cloned().collect();
    let target = Target::parse(target);
    check(&target, node.as_deref(), &services, &nodes)?;
    let since_ns = since.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |n| i64::try_from(n.as_nanos()).unwrap_or(i64::MAX));
        now.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    });
    let req = Request {
        fleet: fleet.fleet.name.clone(),
        target,
        node,
        since_ns,
        tail,
        follow,
    };
    let style = Style {
        json: format == LogFormat::Json,
        timestamps,
        color: format == LogFormat::Text && use_color(),
    };
    let runtimes = connect_all(fleet);
    let rt = super::common::runtime()?;
    let result = rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        let mut colors: BTreeMap<String, usize> = BTreeMap::new();
        let mut sink = |e: Emit<'_>| -> std::io::Result<()> {
            match e {
                Emit::Line(source, line) => {
                    let n = colors.len();
                    let color = *colors.entry(source.prefix()).or_insert(n);
                    let mut out = std::io::stdout().lock();
                    out.write_all(render(style, source, line, color).as_bytes())?;
                    out.flush()
                }
                Emit::Note(text) => {
                    eprintln!("{text}");
                    Ok(())
                }
            }
        };
        crate::logs::read(&runtimes, &req, &mut sink, cancel).await
    });
    rt.shutdown_background();
    match result {
        Ok(()) => Ok(0),
        Err(LogsError::Sink(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LogStream;

    fn source() -> Source {
        Source {
            node: "node1".into(),
            id: "abc".into(),
            container: "demo-web-1-0123abcd".into(),
            replica: Some(1),
            name: "web-1".into(),
        }
    }

    fn line() -> LogLine {
        LogLine {
            time_ns: 1_700_000_000_000_000_001,
            stream: LogStream::Stderr,
            text: "hello".into(),
        }
    }

    #[test]
    fn text_lines_are_prefixed_and_coloured_only_when_asked() {
        let plain = Style {
            json: false,
            timestamps: false,
            color: false,
        };
        assert_eq!(
            render(plain, &source(), &line(), 0),
            "node1/web-1 | hello\n"
        );
        let stamped = Style {
            timestamps: true,
            ..plain
        };
        assert_eq!(
            render(stamped, &source(), &line(), 0),
            "node1/web-1 | 2023-11-14T22:13:20.000000001Z hello\n"
        );
        let coloured = Style {
            color: true,
            ..plain
        };
        assert_eq!(
            render(coloured, &source(), &line(), 1),
            "\x1b[33mnode1/web-1 |\x1b[0m hello\n"
        );
    }

    #[test]
    fn json_lines_carry_time_node_container_replica_stream_and_line() {
        let style = Style {
            json: true,
            timestamps: false,
            color: true,
        };
        let text = render(style, &source(), &line(), 0);
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.000000001Z");
        assert_eq!(v["node"], "node1");
        assert_eq!(v["container"], "demo-web-1-0123abcd");
        assert_eq!(v["replica"], 1);
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["line"], "hello");
    }

    #[test]
    fn unknown_services_and_nodes_are_refused_by_name() {
        let services: BTreeSet<String> = ["db".to_string(), "web".to_string()].into();
        let nodes: BTreeSet<String> = ["node1".to_string(), "node2".to_string()].into();
        let e = check(&Target::parse("api"), None, &services, &nodes).unwrap_err();
        assert_eq!(e.to_string(), "unknown service api (known: db, web)");
        let e = check(&Target::parse("web"), Some("n9"), &services, &nodes).unwrap_err();
        assert_eq!(e.to_string(), "unknown node n9 (known: node1, node2)");
        assert!(check(&Target::parse("plug/p1"), Some("node2"), &services, &nodes).is_ok());
    }
}
