//! `fleetctl events`: the state store's event log (who, what, where, when, why), filtered by
//! time, node and service; `-f` follows it and the engines' events of the fleet's containers.
//!
//! `--service S` keeps the events whose object is `S` itself or one of its containers
//! (`<fleet>-S-<replica>-<hash8>`, see [`crate::desired::service_container`]); engine events are
//! matched by the container's `fleet.service` label. Plug events (object `<fleet>-plug-ID` or
//! the plug id) are never a service's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::common::{emit, open_store_readonly, print_data, resolve_manifests};
use super::{GlobalOpts, Output};
use crate::container::{EngineEvent, labels};
use crate::store::{EventRecord, Store, format_ms, now_ms};

/// How often `-f` reads the store for new events.
const POLL: Duration = Duration::from_millis(300);
/// How long `-f` waits before subscribing again to a node whose engine events stopped.
const RESUBSCRIBE: Duration = Duration::from_secs(5);

/// The filters of one `fleetctl events`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events at or after this time (ms); 0: all.
    pub since_ms: i64,
    /// Only this node's events.
    pub node: Option<String>,
    /// Only this service's events.
    pub service: Option<String>,
    /// The fleet's name (to know its services' container names).
    pub fleet: Option<String>,
}

impl Filter {
    /// Whether an event about `object` belongs to the service asked for (true when none is).
    pub fn service_matches(&self, object: Option<&str>) -> bool {
        let Some(svc) = &self.service else {
            return true;
        };
        let Some(object) = object else {
            return false;
        };
        if object == svc {
            return true;
        }
        let Some(fleet) = &self.fleet else {
            return false;
        };
        // <fleet>-<service>-<replica>-<hash8>: exactly, so `web` does not take `web-api`'s.
        let Some(rest) = object
            .strip_prefix(fleet.as_str())
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_prefix(svc.as_str()))
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        let Some((replica, hash)) = rest.split_once('-') else {
            return false;
        };
        !replica.is_empty()
            && replica.bytes().all(|b| b.is_ascii_digit())
            && hash.len() == crate::desired::NAME_HASH_LEN
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
    }

    fn keeps(&self, e: &EventRecord) -> bool {
        self.node
            .as_deref()
            .is_none_or(|n| e.node.as_deref() == Some(n))
            && self.service_matches(e.object.as_deref())
    }

    fn keeps_engine(&self, node: &str, e: &EngineEvent) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
            && self
                .service
                .as_deref()
                .is_none_or(|s| e.labels.get(labels::SERVICE).map(String::as_str) == Some(s))
    }
}

/// One row of the output: an event of the log, or (with `-f`) of a node's engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// Sequence number in the event log (none for an engine's event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// When, RFC 3339 (UTC, seconds).
    pub time: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Who: `apply`, the controller, `plug`, a drain's holder, or `engine`.
    pub actor: String,
    /// What.
    pub action: String,
    /// Where.
    pub node: Option<String>,
    /// Which container or object.
    pub object: Option<String>,
    /// Why, in words.
    pub message: String,
}

impl From<EventRecord> for EventView {
    fn from(e: EventRecord) -> Self {
        EventView {
            id: Some(e.id),
            time: format_ms(e.at_ms),
            at_ms: e.at_ms,
            actor: e.actor,
            action: e.action,
            node: e.node,
            object: e.object,
            message: e.message,
        }
    }
}

/// An engine's event as a row: actor `engine`, the engine's action, the container's name.
pub fn engine_view(node: &str, e: &EngineEvent) -> EventView {
    let at_ms = if e.time_nano > 0 {
        e.time_nano / 1_000_000
    } else {
        now_ms()
    };
    let object = e
        .labels
        .get("name")
        .cloned()
        .unwrap_or_else(|| e.container_id.chars().take(12).collect());
    let mut message = match (e.labels.get(labels::SERVICE), e.labels.get(labels::PLUG)) {
        (Some(s), _) => format!("service {s}"),
        (None, Some(p)) => format!("plug {p}"),
        _ => String::new(),
    };
    if let Some(code) = e.labels.get("exitCode") {
        if !message.is_empty() {
            message.push_str(", ");
        }
        message.push_str(&format!("exit code {code}"));
    }
    EventView {
        id: None,
        time: format_ms(at_ms),
        at_ms,
        actor: "engine".to_string(),
        action: e.action.clone(),
        node: Some(node.to_string()),
        object: Some(object),
        message,
    }
}

/// The table of `rows` (oldest first).
pub fn table_text(rows: &[EventView]) -> String {
    let mut t = super::capacity::table(&["TIME", "ACTOR", "ACTION", "NODE", "OBJECT", "MESSAGE"]);
    for r in rows {
        t.add_row(vec![
            r.time.clone(),
            r.actor.clone(),
            r.action.clone(),
            r.node.clone().unwrap_or_default(),
            r.object.clone().unwrap_or_default(),
            r.message.clone(),
        ]);
    }
    super::capacity::table_text(&t)
}

/// One row as `-f` prints it in a table: fixed columns, so rows printed as they come line up.
pub fn follow_line(r: &EventView) -> String {
    format!(
        "{:<20}  {:<12}  {:<16}  {:<10}  {:<32}  {}\n",
        r.time,
        r.actor,
        r.action,
        r.node.as_deref().unwrap_or(""),
        r.object.as_deref().unwrap_or(""),
        r.message
    )
}

fn follow_header() -> String {
    follow_line(&EventView {
        id: None,
        time: "TIME".into(),
        at_ms: 0,
        actor: "ACTOR".into(),
        action: "ACTION".into(),
        node: Some("NODE".into()),
        object: Some("OBJECT".into()),
        message: "MESSAGE".into(),
    })
}

fn print_followed(output: Output, r: &EventView) -> anyhow::Result<()> {
    match output {
        Output::Json => emit(&format!("{}\n", serde_json::to_string(r)?)),
        Output::Yaml => emit(&format!("---\n{}", serde_saphyr::to_string(r)?)),
        Output::Table | Output::Wide => emit(&follow_line(r)),
    }
}

/// `fleetctl events`.
///
/// # Errors
/// Invalid manifests, an unreadable state file, or (with `-f`) no manifests to find the nodes.
pub fn run(
    path: Option<&Path>,
    follow: bool,
    since: Option<Duration>,
    node: Option<String>,
    service: Option<String>,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    // The state file: the manifests' fleet's, else the only one there is.
    let (store, loaded) = match path {
        Some(p) => {
            let loaded = resolve_manifests(Some(p), global)?;
            let store = open_store_readonly(global, &loaded.fleet.fleet.name)?;
            (store, Some(loaded))
        }
        None => match super::common::any_state_path(global)? {
            Some(state) if state.exists() => {
                (Store::open(&state)?, resolve_manifests(None, global).ok())
            }
            _ => (Store::in_memory()?, None),
        },
    };
    let since_ms = since.map_or(0, |d| {
        now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    });
    let filter = Filter {
        since_ms,
        node,
        service,
        fleet: loaded.as_ref().map(|l| l.fleet.fleet.name.clone()),
    };
    let records = store.events_since(filter.since_ms, 0, filter.node.as_deref())?;
    let last_id = records.last().map_or(0, |e| e.id);
    let rows: Vec<EventView> = records
        .into_iter()
        .filter(|e| filter.keeps(e))
        .map(EventView::from)
        .collect();
    if !follow {
        match output {
            Output::Json | Output::Yaml => print_data(output, &rows)?,
            Output::Table | Output::Wide if rows.is_empty() => emit("No events.\n")?,
            Output::Table | Output::Wide => emit(&table_text(&rows))?,
        }
        return Ok(0);
    }
    let Some(loaded) = loaded else {
        anyhow::bail!(
            "events -f follows the fleet's engines too and needs its nodes: pass the fleet's manifests (PATH or --file PATH), or apply them once"
        );
    };
    if matches!(output, Output::Table | Output::Wide) {
        emit(&follow_header())?;
    }
    for r in &rows {
        print_followed(output, r)?;
    }
    let rt = super::common::runtime()?;
    rt.block_on(follow_all(
        Arc::new(store),
        last_id,
        filter,
        &loaded.fleet,
        output,
    ))?;
    Ok(0)
}

/// Follows the store (new rows by id, every [`POLL`]) and every node's engine events of the
/// fleet's containers, printing rows as they come, until Ctrl-C.
async fn follow_all(
    store: Arc<Store>,
    mut last_id: i64,
    filter: Filter,
    fleet: &crate::manifest::DesiredFleet,
    output: Output,
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<EventView>(256);
    let cancel = tokio_util::sync::CancellationToken::new();
    let runtimes = super::common::connect_all(fleet);
    let engine_filter = crate::transport::ListFilter {
        labels: crate::desired::fleet_filter(&fleet.fleet.name),
    };
    for (node, rt) in runtimes {
        if filter.node.as_deref().is_some_and(|n| n != node) {
            continue;
        }
        let (tx, cancel, filter, engine_filter) = (
            tx.clone(),
            cancel.clone(),
            filter.clone(),
            engine_filter.clone(),
        );
        tokio::spawn(async move {
            follow_engine(node, rt, engine_filter, filter, tx, cancel).await;
        });
    }
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        tokio::select! {
            _ = &mut ctrl_c => break Ok(()),
            Some(row) = rx.recv() => print_followed(output, &row)?,
            _ = poll.tick() => {
                let records = match store.events_since(filter.since_ms, last_id, filter.node.as_deref()) {
                    Ok(r) => r,
                    Err(e) => break Err(anyhow::Error::from(e)),
                };
                for e in records {
                    last_id = last_id.max(e.id);
                    if filter.keeps(&e) {
                        print_followed(output, &EventView::from(e))?;
                    }
                }
            }
        }
    };
    cancel.cancel();
    result
}

/// One node's engine events, resubscribing after [`RESUBSCRIBE`] when the stream ends; a
/// failure (its text names the node) is said once on stderr until the node answers again.
async fn follow_engine(
    node: String,
    rt: Arc<dyn crate::transport::NodeRuntime>,
    engine_filter: crate::transport::ListFilter,
    filter: Filter,
    tx: tokio::sync::mpsc::Sender<EventView>,
    cancel: tokio_util::sync::CancellationToken,
) {
    use futures_util::StreamExt;
    let mut said = false;
    loop {
        let subscribed = tokio::select! {
            _ = cancel.cancelled() => return,
            s = rt.events(&engine_filter) => s,
        };
        match subscribed {
            Ok(mut stream) => {
                said = false;
                loop {
                    let item = tokio::select! {
                        _ = cancel.cancelled() => return,
                        item = stream.next() => item,
                    };
                    match item {
                        Some(Ok(e)) => {
                            if filter.keeps_engine(&node, &e)
                                && tx.send(engine_view(&node, &e)).await.is_err()
                            {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            if !super::common::quiet() {
                                eprintln!("engine events stopped: {e}; subscribing again");
                            }
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(e) => {
                if !said && !super::common::quiet() {
                    eprintln!(
                        "no engine events: {e}; trying again every {}s",
                        RESUBSCRIBE.as_secs()
                    );
                }
                said = true;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RESUBSCRIBE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: i64, node: Option<&str>, object: Option<&str>) -> EventRecord {
        EventRecord {
            id,
            at_ms: 1_700_000_000_000,
            actor: "apply".into(),
            action: "create".into(),
            node: node.map(Into::into),
            object: object.map(Into::into),
            message: "m".into(),
        }
    }

    #[test]
    fn service_filter_takes_the_service_and_its_containers_only() {
        let f = Filter {
            service: Some("web".into()),
            fleet: Some("prod".into()),
            ..Filter::default()
        };
        assert!(f.service_matches(Some("web")));
        assert!(f.service_matches(Some("prod-web-0-0123abcd")));
        assert!(f.service_matches(Some("prod-web-12-deadbeef")));
        assert!(!f.service_matches(Some("prod-web-api-0-0123abcd")));
        assert!(!f.service_matches(Some("prod-web-x-0123abcd")));
        assert!(!f.service_matches(Some("other-web-0-0123abcd")));
        assert!(!f.service_matches(Some("prod-plug-p1")));
        assert!(!f.service_matches(None));
        let none = Filter::default();
        assert!(none.service_matches(None));
    }

    #[test]
    fn node_filter_and_rendering() {
        let f = Filter {
            node: Some("a".into()),
            ..Filter::default()
        };
        assert!(f.keeps(&rec(1, Some("a"), None)));
        assert!(!f.keeps(&rec(2, Some("b"), None)));
        assert!(!f.keeps(&rec(3, None, None)));
        let rows = vec![EventView::from(rec(
            1,
            Some("a"),
            Some("prod-web-0-0123abcd"),
        ))];
        let text = table_text(&rows);
        let header = text.lines().next().unwrap();
        for col in ["TIME", "ACTOR", "ACTION", "NODE", "OBJECT", "MESSAGE"] {
            assert!(header.contains(col), "{header}");
        }
        assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
        assert!(text.contains("prod-web-0-0123abcd"));
        let line = follow_line(&rows[0]);
        assert!(line.starts_with("2023-11-14T22:13:20Z  apply "), "{line}");
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["id"], 1);
        assert_eq!(json["node"], "a");
    }

    #[test]
    fn engine_events_become_rows_named_by_container() {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("name".to_string(), "prod-web-0-0123abcd".to_string());
        labels.insert(labels::SERVICE.to_string(), "web".to_string());
        labels.insert("exitCode".to_string(), "137".to_string());
        let e = EngineEvent {
            container_id: "abcdef0123456789".into(),
            action: "die".into(),
            labels,
            time_nano: 1_700_000_000_000_000_000,
        };
        let v = engine_view("a", &e);
        assert_eq!(v.actor, "engine");
        assert_eq!(v.action, "die");
        assert_eq!(v.object.as_deref(), Some("prod-web-0-0123abcd"));
        assert_eq!(v.message, "service web, exit code 137");
        assert_eq!(v.at_ms, 1_700_000_000_000);
        let f = Filter {
            service: Some("web".into()),
            ..Filter::default()
        };
        assert!(f.keeps_engine("a", &e));
        let f = Filter {
            node: Some("b".into()),
            ..Filter::default()
        };
        assert!(!f.keeps_engine("a", &e));
    }
}
