//! `fleetctl plug create|delete|touch|list` and `get plugs`.

use std::collections::BTreeSet;
use std::path::Path;
use tracing::Instrument;

use super::capacity::table;
use super::common::{
    emit, open_store, open_store_readonly, print_data, print_json, print_yaml, resolve_manifests,
    runtime,
};
use super::{GlobalOpts, Output, PlugOp, handoff};
use crate::controller::intents;
use crate::plugs::{self, PLUG_READY_TIMEOUT};
use crate::store::{PlugRecord, format_ms, now_ms};

/// Runs a plug operation.
///
/// # Errors
/// Invalid manifests, store or Docker failures, nothing fits (the per-node diagnosis).
pub fn run(op: PlugOp, global: &GlobalOpts) -> anyhow::Result<u8> {
    match op {
        PlugOp::Create {
            class,
            owner,
            file,
            output,
        } => create(&class, &owner, file.as_deref(), output, global),
        PlugOp::Delete { id, file } => {
            let loaded = resolve_manifests(file.as_deref(), global)?;
            let store = open_store(global, &loaded.fleet.fleet.name)?;
            let notes = match route(&loaded, &store, global, "plug delete")? {
                Route::Intent(c) => {
                    let payload = intents::PlugIdIntent { id: id.clone() };
                    match handoff::plug_op::<intents::PlugDeleted>(
                        &store,
                        &c,
                        intents::kinds::PLUG_DELETE,
                        &payload,
                    )? {
                        Some(d) => d.notes,
                        None => return Ok(1),
                    }
                }
                Route::Api(remote) => {
                    let a = remote.call(http::Method::DELETE, &format!("/v1/plugs/{id}"), None)?;
                    if a.status != 200 {
                        eprintln!("error: {}", a.error());
                        return Ok(1);
                    }
                    serde_json::from_value(a.body["notes"].clone()).unwrap_or_default()
                }
                Route::Refused => return Ok(1),
                Route::Direct(rt, runtimes) => rt.block_on(async {
                    plugs::delete(&loaded.fleet, &store, &runtimes, &id).await
                })?,
            };
            for n in notes {
                eprintln!("note: {n}");
            }
            emit(&format!("plug {id} deleted\n"))?;
            Ok(0)
        }
        PlugOp::Touch { id, file } => {
            let loaded = resolve_manifests(file.as_deref(), global)?;
            let store = open_store(global, &loaded.fleet.fleet.name)?;
            let plug = match route(&loaded, &store, global, "plug touch")? {
                Route::Intent(c) => {
                    let payload = intents::PlugIdIntent { id: id.clone() };
                    match handoff::plug_op::<PlugRecord>(
                        &store,
                        &c,
                        intents::kinds::PLUG_TOUCH,
                        &payload,
                    )? {
                        Some(p) => p,
                        None => return Ok(1),
                    }
                }
                Route::Api(remote) => {
                    let a =
                        remote.call(http::Method::POST, &format!("/v1/plugs/{id}/touch"), None)?;
                    match serde_json::from_value::<PlugRecord>(a.body.clone()) {
                        Ok(p) if a.status == 200 => p,
                        _ => {
                            eprintln!("error: {}", a.error());
                            return Ok(1);
                        }
                    }
                }
                Route::Refused => return Ok(1),
                Route::Direct(rt, runtimes) => {
                    let fleet = super::common::with_secrets(&loaded.fleet, &store)?;
                    rt.block_on(async {
                        plugs::touch(&fleet, &store, &runtimes, &BTreeSet::new(), &id, now_ms())
                            .await
                    })?
                }
            };
            emit(&format!(
                "plug {id} touched ({} on {}:{})\n",
                plug.state.as_str(),
                plug.node,
                plug.host_port
            ))?;
            Ok(0)
        }
        PlugOp::List { file, output } => list(file.as_deref(), output, global),
    }
}

/// Where a plug command goes.
enum Route {
    /// To the controller sharing this state file.
    Intent(crate::store::LeaseInfo),
    /// To a controller elsewhere, through its API.
    Api(super::remote::Remote),
    /// Refused (printed): a controller runs elsewhere and no API was given.
    Refused,
    /// Done here, on these connections.
    Direct(tokio::runtime::Runtime, crate::execute::Runtimes),
}

/// Finds who does `verb`: a controller of this fleet (here or on another machine, found in
/// the state file or on the nodes) or this command. Never acts beside a controller.
fn route(
    loaded: &crate::manifest::Loaded,
    store: &crate::store::Store,
    global: &GlobalOpts,
    verb: &str,
) -> anyhow::Result<Route> {
    let fleet = &loaded.fleet.fleet.name;
    // A controller given on the command line gets the command through its API, found or not
    // (a CI runner may hold the API's address and token but no SSH key).
    if let Some(remote) = super::remote::Remote::from_options(global.controller.as_deref())? {
        if !super::common::quiet() {
            eprintln!("handing `{verb}` to the controller at {}", remote.url());
        }
        return Ok(Route::Api(remote));
    }
    let rt = runtime()?;
    let runtimes = super::common::connect_all(&loaded.fleet);
    let nodes = crate::lease::nodes::NodeSet::shared(fleet, runtimes.clone(), rt.handle().clone());
    Ok(match handoff::find_controller(store, &nodes)? {
        Some(handoff::Found::Here(c)) => Route::Intent(c),
        Some(handoff::Found::Elsewhere(c)) => {
            handoff::refuse(fleet, verb, &c);
            Route::Refused
        }
        None => Route::Direct(rt, runtimes),
    })
}

fn create(
    class: &str,
    owner: &str,
    file: Option<&Path>,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(file, global)?;
    let fleet = &loaded.fleet;
    let store = open_store(global, &fleet.fleet.name)?;
    let (rt, runtimes) = match route(&loaded, &store, global, "plug create")? {
        Route::Intent(c) => {
            let payload = intents::PlugCreateIntent {
                class: class.to_string(),
                owner: owner.to_string(),
            };
            return match handoff::plug_op(&store, &c, intents::kinds::PLUG_CREATE, &payload)? {
                Some(created) => print_created(&created, output),
                None => Ok(1),
            };
        }
        Route::Api(remote) => {
            let body = serde_json::json!({ "class": class, "owner": owner });
            let a = remote.call(http::Method::POST, "/v1/plugs", Some(body))?;
            return match serde_json::from_value::<plugs::PlugCreated>(a.body.clone()) {
                Ok(created) if a.status == 201 => print_created(&created, output),
                _ => {
                    eprintln!("error: {}", a.error());
                    if let Some(d) = a.body.get("diagnosis") {
                        eprintln!("{}", serde_json::to_string_pretty(d).unwrap_or_default());
                    }
                    Ok(1)
                }
            };
        }
        Route::Refused => return Ok(1),
        Route::Direct(rt, runtimes) => (rt, runtimes),
    };
    let with_secrets = super::common::with_secrets(fleet, &store)?;
    let fleet = &with_secrets;
    let created = rt.block_on(
        async {
            let observed = plugs::observe_for_placement(fleet, &runtimes)
                .instrument(tracing::debug_span!("observe"))
                .await;
            plugs::ensure_network(fleet, &runtimes, &observed)
                .instrument(tracing::debug_span!("ensure_network"))
                .await;
            let plug = tracing::debug_span!("reserve").in_scope(|| {
                plugs::reserve_plug(
                    fleet,
                    &store,
                    &observed,
                    &BTreeSet::new(),
                    class,
                    owner,
                    now_ms(),
                )
            })?;
            plugs::start_reserved(fleet, &store, &runtimes, &plug, PLUG_READY_TIMEOUT).await
        }
        .instrument(tracing::debug_span!("plug_create", class, owner)),
    );
    let created = match created {
        Ok(c) => c,
        Err(e @ plugs::PlugError::Unschedulable { .. }) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    print_created(&created, output)
}

fn print_created(created: &plugs::PlugCreated, output: Output) -> anyhow::Result<u8> {
    match output {
        Output::Json => print_json(&created)?,
        Output::Yaml => print_yaml(&created)?,
        _ => {
            let mut t = table(&["PLUG", "CLASS", "OWNER", "NODE", "ADDRESS", "IN FLEET"]);
            t.add_row(vec![
                created.id.clone(),
                created.class.clone(),
                created.owner.clone(),
                created.node.clone(),
                if created.port == 0 {
                    "-".to_string()
                } else {
                    format!("{}:{}", created.host, created.port)
                },
                created.address.clone(),
            ]);
            emit(&super::capacity::table_text(&t))?;
        }
    }
    Ok(0)
}

fn age(ms: i64, now: i64) -> String {
    let secs = ((now - ms).max(0) / 1000) as u64;
    let d = std::time::Duration::from_secs(secs);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d", d.as_secs() / 86400),
    }
}

/// `get plugs` / `plug list`: every plug instance from the state store.
///
/// # Errors
/// Store failures.
pub fn list(file: Option<&Path>, output: Output, global: &GlobalOpts) -> anyhow::Result<u8> {
    let (plugs, loaded): (Vec<PlugRecord>, _) = match file {
        Some(f) => {
            let loaded = resolve_manifests(Some(f), global)?;
            let plugs = open_store_readonly(global, &loaded.fleet.fleet.name)?.plugs()?;
            (plugs, Some(loaded))
        }
        None => match super::common::any_state_path(global)? {
            Some(path) if path.exists() => {
                let plugs = crate::store::Store::open(&path)?.plugs()?;
                (plugs, resolve_manifests(None, global).ok())
            }
            _ => (Vec::new(), None),
        },
    };
    match output {
        // As the API shows them (with host, port and container), when the manifests are known.
        Output::Json | Output::Yaml if let Some(loaded) = &loaded => {
            let views: Vec<crate::plugs::PlugView> = plugs
                .into_iter()
                .map(|p| crate::plugs::PlugView::new(&loaded.fleet, p))
                .collect();
            print_data(output, &views)?;
        }
        Output::Json => print_json(&plugs)?,
        Output::Yaml => print_yaml(&plugs)?,
        _ => {
            let now = now_ms();
            let wide = output == Output::Wide;
            let mut header = vec![
                "ID", "CLASS", "OWNER", "NODE", "PORT", "STATE", "AGE", "IDLE",
            ];
            if wide {
                header.extend(["CREATED", "MESSAGE"]);
            }
            let mut t = table(&header);
            for p in &plugs {
                let mut row = vec![
                    p.id.clone(),
                    p.class.clone(),
                    p.owner.clone(),
                    p.node.clone(),
                    p.host_port.to_string(),
                    p.state.as_str().to_string(),
                    age(p.created_ms, now),
                    age(p.last_activity_ms, now),
                ];
                if wide {
                    row.push(format_ms(p.created_ms));
                    row.push(p.message.clone().unwrap_or_default());
                }
                t.add_row(row);
            }
            if plugs.is_empty() {
                emit("No plugs.\n")?;
            } else {
                emit(&super::capacity::table_text(&t))?;
            }
        }
    }
    Ok(0)
}
