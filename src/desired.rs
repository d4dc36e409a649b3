//! Desired containers: what each service replica and each plug instance should look like on its
//! node — deterministic names, the ownership labels of SPEC §3 and the spec hash. Pure.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::Digest;

use crate::container::{
    ContainerFile, ContainerSpec, EngineKind, FileSource, NetworkAttachment, PortMapping, Protocol,
    RestartPolicy, SecretRef, SecretValue, labels,
};
use crate::manifest::spec::FileSpecs;
use crate::manifest::{DesiredFleet, PlugClassSpec, ServiceNetwork, ServiceSpec};

/// Characters of the spec hash kept in labels and names (64 bits: collisions between two specs
/// of one service are not a practical concern).
pub const HASH_LEN: usize = 16;
/// Characters of the hash in container names.
pub const NAME_HASH_LEN: usize = 8;

/// The fields the hash covers: everything except what the engine can change in place
/// (resources, restart policy) and the name (which is derived from the hash).
#[derive(Serialize)]
struct HashView<'a> {
    image: &'a str,
    command: &'a Option<Vec<String>>,
    env: &'a BTreeMap<String, String>,
    labels: BTreeMap<&'a str, &'a str>,
    ports: &'a [PortMapping],
    volumes: &'a [String],
    healthcheck: &'a Option<crate::container::HealthcheckSpec>,
    stop_grace_period_ms: Option<u128>,
    network: &'a crate::container::NetworkAttachment,
    /// Where each file goes and with which mode and owner (their contents are in the labels,
    /// by digest). Left out when there are none, so specs without files hash as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<(&'a str, u32, u32, u32)>,
    /// Per-container engine settings (SPEC §13). Left out when none is set, so specs without
    /// them hash as before.
    #[serde(skip_serializing_if = "crate::container::Knobs::is_empty")]
    knobs: &'a crate::container::Knobs,
}

/// Hash of the canonical spec without its in-place-updatable fields: equal hashes ⇒ no recreate.
pub fn spec_hash(spec: &ContainerSpec) -> String {
    let view = HashView {
        image: &spec.image,
        command: &spec.command,
        env: &spec.env,
        labels: spec
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != labels::SPEC_HASH)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        ports: &spec.ports,
        volumes: &spec.volumes,
        healthcheck: &spec.healthcheck,
        stop_grace_period_ms: spec.stop_grace_period.map(|d| d.as_millis()),
        network: &spec.network,
        files: spec
            .files
            .iter()
            .map(|f| (f.target.as_str(), f.mode, f.uid, f.gid))
            .collect(),
        knobs: &spec.knobs,
    };
    let json = serde_json::to_vec(&view).expect("hash view serializes");
    let digest = sha2::Sha256::digest(&json);
    hex::encode(digest)[..HASH_LEN].to_string()
}

/// Sets the spec-hash label and returns the hash.
fn seal(spec: &mut ContainerSpec) -> String {
    let hash = spec_hash(spec);
    spec.labels
        .insert(labels::SPEC_HASH.to_string(), hash.clone());
    hash
}

/// Labels `image`'s pinned digest ([`labels::IMAGE_PIN`], `TAG@DIGEST`) when the fleet has one
/// for it: part of the spec hash, so a tag that moved (after `--refresh`) replaces the
/// containers, by the service's update order.
fn pin_digest(fleet: &DesiredFleet, image: &str, labels: &mut BTreeMap<String, String>) {
    if let Some(digest) = fleet.image_digests.get(image) {
        labels.insert(labels::IMAGE_PIN.to_string(), format!("{image}@{digest}"));
    }
}

/// What a container gets from `files` (SPEC §12): its secret environment variables, its files
/// (secrets with the values read for this pass, configs with their content), and the labels
/// that stand for them by digest ([`crate::secrets::label_values`]). A secret not read (a
/// view that reads none) gets an empty value and digest.
fn file_parts(
    fleet: &DesiredFleet,
    files: &FileSpecs,
    labels: &mut BTreeMap<String, String>,
) -> (BTreeMap<String, SecretRef>, Vec<ContainerFile>) {
    let resolved = |name: &str| {
        fleet
            .secret_values
            .get(name)
            .map_or((SecretValue::default(), String::new()), |r| {
                (r.value.clone(), r.digest.clone())
            })
    };
    let mut secret_digests = BTreeMap::new();
    let mut config_digests = BTreeMap::new();
    let mut env_names = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for (var, secret) in &files.secret_env {
        let (value, digest) = resolved(secret);
        secret_digests.insert(secret.clone(), digest);
        env_names.insert(var.clone(), secret.clone());
        secret_env.insert(
            var.clone(),
            SecretRef {
                secret: secret.clone(),
                value,
            },
        );
    }
    let mut out = Vec::new();
    for m in &files.secrets {
        let (value, digest) = resolved(&m.name);
        secret_digests.insert(m.name.clone(), digest.clone());
        out.push(ContainerFile {
            target: m.target.clone(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            source: FileSource::Secret(m.name.clone()),
            digest,
            content: value,
        });
    }
    for c in &files.configs {
        let digest = crate::secrets::content_digest(&c.content);
        config_digests.insert(c.name.clone(), digest.clone());
        out.push(ContainerFile {
            target: c.target.clone(),
            mode: c.mode,
            uid: c.uid,
            gid: c.gid,
            source: FileSource::Config(c.name.clone()),
            digest,
            content: SecretValue::new(c.content.clone()),
        });
    }
    for (k, v) in crate::secrets::label_values(&secret_digests, &config_digests, &env_names) {
        labels.insert(k.to_string(), v);
    }
    (secret_env, out)
}

fn base_labels(fleet: &DesiredFleet, node: &str, kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::FLEET.to_string(), fleet.fleet.name.clone()),
        (labels::NODE.to_string(), node.to_string()),
        (labels::KIND.to_string(), kind.to_string()),
    ])
}

/// The label filter that selects every container of `fleet` (for listings and events).
pub fn fleet_filter(fleet_name: &str) -> Vec<String> {
    vec![
        format!("{}={}", labels::MANAGED_BY, labels::MANAGER),
        format!("{}={fleet_name}", labels::FLEET),
    ]
}

/// The engine the manifests declare for `node` (Docker when it is not in them).
fn declared_engine(fleet: &DesiredFleet, node: &str) -> EngineKind {
    fleet.nodes.get(node).map(|n| n.engine).unwrap_or_default()
}

/// The container for replica `replica` of `svc` on `node`, whose engine is the one the
/// manifests declare; see [`service_container_on`].
pub fn service_container(
    fleet: &DesiredFleet,
    svc: &ServiceSpec,
    replica: u32,
    node: &str,
) -> ContainerSpec {
    service_container_on(fleet, svc, replica, node, declared_engine(fleet, node))
}

/// The container for replica `replica` of `svc` on `node`, whose engine is `engine` (it decides
/// the network: see [`DesiredFleet::network_name_on`]). Its name is
/// `<fleet>-<service>-<replica>-<hash8>`: a changed spec gets a new name, so a start-first
/// replacement never collides with the container it replaces, and re-creating the same spec
/// after a crash hits the same name (a conflict that means "already there").
pub fn service_container_on(
    fleet: &DesiredFleet,
    svc: &ServiceSpec,
    replica: u32,
    node: &str,
    engine: EngineKind,
) -> ContainerSpec {
    let mut labels = svc.labels.clone();
    labels.extend(base_labels(fleet, node, "service"));
    labels.insert(labels::SERVICE.to_string(), svc.name.clone());
    labels.insert(labels::REPLICA.to_string(), replica.to_string());
    pin_digest(fleet, &svc.image, &mut labels);
    let (secret_env, files) = file_parts(fleet, &svc.files, &mut labels);
    let mut spec = ContainerSpec {
        secret_env,
        files,
        pull: svc.pull,
        name: String::new(),
        image: svc.image.clone(),
        command: svc.command.clone(),
        env: svc.env.clone(),
        labels,
        ports: svc.ports.clone(),
        volumes: svc.volumes.clone(),
        restart: svc.restart,
        resources: svc.resources.to_container(),
        healthcheck: svc.healthcheck.clone(),
        stop_grace_period: svc.stop_grace_period,
        network: service_network(fleet, svc, engine),
        knobs: svc.knobs.clone(),
    };
    let hash = seal(&mut spec);
    spec.name = format!(
        "{}-{}-{}-{}",
        fleet.fleet.name,
        svc.name,
        replica,
        &hash[..NAME_HASH_LEN]
    );
    spec
}

/// Where a service's containers attach: the fleet's network (as a node with `engine` has it)
/// under the service's name and aliases (SPEC §10), the node's stack, or none.
fn service_network(
    fleet: &DesiredFleet,
    svc: &ServiceSpec,
    engine: EngineKind,
) -> NetworkAttachment {
    match svc.network {
        ServiceNetwork::Host => NetworkAttachment::Host,
        ServiceNetwork::None => NetworkAttachment::None,
        ServiceNetwork::Fleet => NetworkAttachment::Fleet {
            network: fleet.network_name_on(engine),
            aliases: std::iter::once(svc.name.clone())
                .chain(svc.aliases.iter().cloned())
                .collect(),
        },
    }
}

/// The name plug `id` answers to on the fleet's network: `plug-<id>`.
pub fn plug_dns_name(id: &str) -> String {
    format!("plug-{id}")
}

/// Identity of one plug instance, as the state store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlugIdentity<'a> {
    /// Plug id.
    pub id: &'a str,
    /// Owner.
    pub owner: &'a str,
    /// Node it is placed on.
    pub node: &'a str,
    /// Host port leased on that node.
    pub host_port: u16,
}

/// The container name of plug `id`: `<fleet>-plug-<id>`, the same on whichever node it runs.
pub fn plug_container_name(fleet_name: &str, id: &str) -> String {
    format!("{fleet_name}-plug-{id}")
}

/// The container of one plug instance, on a node whose engine is the one the manifests
/// declare; see [`plug_container_on`].
pub fn plug_container(
    fleet: &DesiredFleet,
    class: &PlugClassSpec,
    plug: &PlugIdentity,
) -> ContainerSpec {
    plug_container_on(fleet, class, plug, declared_engine(fleet, plug.node))
}

/// The container of one plug instance on a node whose engine is `engine` (it decides the
/// network). Plugs get `FLEET_PLUG_ID`, `FLEET_PLUG_OWNER`, `FLEET_NODE` and `FLEET_HOST_PORT`
/// in their environment (SPEC §2) and publish the class port on their leased host port.
pub fn plug_container_on(
    fleet: &DesiredFleet,
    class: &PlugClassSpec,
    plug: &PlugIdentity,
    engine: EngineKind,
) -> ContainerSpec {
    let mut labels = class.labels.clone();
    labels.extend(base_labels(fleet, plug.node, "plug"));
    labels.insert(labels::PLUG.to_string(), plug.id.to_string());
    labels.insert(labels::PLUG_CLASS.to_string(), class.name.clone());
    labels.insert(labels::OWNER.to_string(), plug.owner.to_string());
    let mut env = class.env.clone();
    env.insert("FLEET_PLUG_ID".into(), plug.id.to_string());
    env.insert("FLEET_PLUG_OWNER".into(), plug.owner.to_string());
    env.insert("FLEET_NODE".into(), plug.node.to_string());
    if plug.host_port != 0 {
        env.insert("FLEET_HOST_PORT".into(), plug.host_port.to_string());
    }
    pin_digest(fleet, &class.image, &mut labels);
    let (secret_env, files) = file_parts(fleet, &class.files, &mut labels);
    let mut spec = ContainerSpec {
        secret_env,
        files,
        pull: class.pull,
        name: plug_container_name(&fleet.fleet.name, plug.id),
        image: class.image.clone(),
        command: class.command.clone(),
        env,
        labels,
        // Port 0: the class has no host ports; the plug is reached on the fleet's network.
        ports: (plug.host_port != 0)
            .then_some(PortMapping {
                host_ip: None,
                host_port: plug.host_port,
                container_port: class.port,
                protocol: Protocol::Tcp,
            })
            .into_iter()
            .collect(),
        volumes: vec![],
        restart: RestartPolicy::UnlessStopped,
        resources: class.resources.to_container(),
        healthcheck: class.healthcheck.clone(),
        stop_grace_period: None,
        network: NetworkAttachment::Fleet {
            network: fleet.network_name_on(engine),
            aliases: vec![plug_dns_name(plug.id)],
        },
        knobs: class.knobs.clone(),
    };
    seal(&mut spec);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Source, parse};

    fn fleet() -> DesiredFleet {
        parse(&[Source {
            name: "t.yaml".into(),
            text: "apiVersion: fleet/v1
kind: Fleet
metadata: {name: aims}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: redis, labels: {app: aims}}
spec: {image: redis:7, resources: {memory: 256MiB}, env: {A: b}}
"
            .into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
    }

    /// On a node whose engine cannot join a swarm, a container of an overlay fleet attaches to
    /// the bridge a bridge fleet would have (a name, hence a spec, of its own); a Docker node's
    /// containers are as before, and in a bridge fleet the engine changes nothing.
    #[test]
    fn a_podman_node_of_an_overlay_fleet_attaches_to_its_own_bridge() {
        let text = |mode: &str| {
            format!(
                "apiVersion: fleet/v1
kind: Fleet
metadata: {{name: aims}}
spec: {{network: {{mode: {mode}}}}}
---
apiVersion: fleet/v1
kind: Node
metadata: {{name: node1}}
spec: {{ssh: {{host: 10.0.0.1}}}}
---
apiVersion: fleet/v1
kind: Node
metadata: {{name: node4}}
spec: {{ssh: {{host: 10.0.0.4}}, docker: {{engine: podman}}}}
---
apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec: {{image: web:1, resources: {{memory: 256MiB}}}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec: {{image: plug:1, resources: {{memory: 64MiB}}, port: 8080}}
"
            )
        };
        let parsed = |mode: &str| {
            parse(&[Source {
                name: "t.yaml".into(),
                text: text(mode),
            }])
            .unwrap_or_else(|e| panic!("{e}"))
            .fleet
        };
        let network = |s: &ContainerSpec| match &s.network {
            NetworkAttachment::Fleet { network, .. } => network.clone(),
            other => panic!("{other:?}"),
        };
        let f = parsed("overlay");
        let web = &f.services["web"];
        let docker = service_container_on(&f, web, 0, "node1", EngineKind::Docker);
        let podman = service_container_on(&f, web, 0, "node4", EngineKind::Podman);
        assert_eq!(network(&docker), "aims");
        assert_eq!(network(&podman), "aims-bridge");
        // Without an engine answer, the declared one decides.
        assert_eq!(
            network(&service_container(&f, web, 0, "node4")),
            "aims-bridge"
        );
        assert_eq!(network(&service_container(&f, web, 0, "node1")), "aims");
        let plug = |node: &str, engine| {
            plug_container_on(
                &f,
                &f.plug_classes["agent"],
                &PlugIdentity {
                    id: "p1",
                    owner: "ada",
                    node,
                    host_port: 0,
                },
                engine,
            )
        };
        assert_eq!(network(&plug("node4", EngineKind::Podman)), "aims-bridge");
        assert_eq!(network(&plug("node1", EngineKind::Docker)), "aims");
        let b = parsed("bridge");
        let web = &b.services["web"];
        assert_eq!(
            service_container_on(&b, web, 0, "node4", EngineKind::Podman),
            service_container_on(&b, web, 0, "node4", EngineKind::Docker)
        );
    }

    #[test]
    fn service_containers_carry_spec_labels_and_a_hash_named_after_it() {
        let f = fleet();
        let c = service_container(&f, &f.services["redis"], 0, "node1");
        assert_eq!(c.labels[labels::MANAGED_BY], "fleetctl");
        assert_eq!(c.labels[labels::FLEET], "aims");
        assert_eq!(c.labels[labels::NODE], "node1");
        assert_eq!(c.labels[labels::KIND], "service");
        assert_eq!(c.labels[labels::SERVICE], "redis");
        assert_eq!(c.labels["app"], "aims");
        let hash = &c.labels[labels::SPEC_HASH];
        assert_eq!(hash.len(), HASH_LEN);
        assert_eq!(c.name, format!("aims-redis-0-{}", &hash[..8]));
    }

    #[test]
    fn in_place_fields_do_not_change_the_hash_but_others_do() {
        let f = fleet();
        let base = service_container(&f, &f.services["redis"], 0, "node1");
        let mut g = f.clone();
        let svc = g.services.get_mut("redis").unwrap();
        svc.resources.memory = crate::manifest::Bytes(512 << 20);
        svc.restart = RestartPolicy::Always;
        let same = service_container(&g, &g.services["redis"], 0, "node1");
        assert_eq!(
            same.labels[labels::SPEC_HASH],
            base.labels[labels::SPEC_HASH]
        );
        assert_eq!(same.name, base.name);
        g.services.get_mut("redis").unwrap().image = "redis:7.2".into();
        let other = service_container(&g, &g.services["redis"], 0, "node1");
        assert_ne!(
            other.labels[labels::SPEC_HASH],
            base.labels[labels::SPEC_HASH]
        );
        assert_ne!(other.name, base.name);
    }

    /// The hash view as it was before the knobs of SPEC §13: a spec that sets none must hash
    /// exactly as then, or an upgrade would replace every running container.
    #[derive(Serialize)]
    struct HashViewBeforeKnobs<'a> {
        image: &'a str,
        command: &'a Option<Vec<String>>,
        env: &'a BTreeMap<String, String>,
        labels: BTreeMap<&'a str, &'a str>,
        ports: &'a [PortMapping],
        volumes: &'a [String],
        healthcheck: &'a Option<crate::container::HealthcheckSpec>,
        stop_grace_period_ms: Option<u128>,
        network: &'a crate::container::NetworkAttachment,
    }

    #[test]
    fn a_spec_without_knobs_hashes_as_before_and_each_knob_changes_the_hash() {
        let f = fleet();
        let c = service_container(&f, &f.services["redis"], 0, "node1");
        let old = HashViewBeforeKnobs {
            image: &c.image,
            command: &c.command,
            env: &c.env,
            labels: c
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != labels::SPEC_HASH)
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            ports: &c.ports,
            volumes: &c.volumes,
            healthcheck: &c.healthcheck,
            stop_grace_period_ms: c.stop_grace_period.map(|d| d.as_millis()),
            network: &c.network,
        };
        let json = serde_json::to_vec(&old).unwrap();
        let before = hex::encode(sha2::Sha256::digest(&json))[..HASH_LEN].to_string();
        assert_eq!(c.labels[labels::SPEC_HASH], before);

        let base = c.labels[labels::SPEC_HASH].clone();
        let changes: Vec<fn(&mut crate::container::Knobs)> = vec![
            |k| k.log_max_size = Some(10 << 20),
            |k| {
                k.ulimits.insert(
                    "nofile".into(),
                    crate::container::Ulimit {
                        soft: 65536,
                        hard: 65536,
                    },
                );
            },
            |k| {
                k.sysctls.insert("net.core.somaxconn".into(), "4096".into());
            },
            |k| k.user = Some("1000".into()),
            |k| k.working_dir = Some("/srv".into()),
            |k| k.read_only = true,
            |k| k.cap_add = vec!["CAP_NET_ADMIN".into()],
            |k| k.cap_drop = vec!["ALL".into()],
            |k| k.stop_signal = Some("SIGQUIT".into()),
        ];
        for change in changes {
            let mut g = f.clone();
            change(&mut g.services.get_mut("redis").unwrap().knobs);
            let other = service_container(&g, &g.services["redis"], 0, "node1");
            assert_ne!(other.labels[labels::SPEC_HASH], base, "{:?}", other.knobs);
        }
    }

    #[test]
    fn manifests_knobs_reach_service_and_plug_containers() {
        let out = parse(&[Source {
            name: "t.yaml".into(),
            text: "apiVersion: fleet/v1
kind: Fleet
metadata: {name: aims}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  resources: {memory: 64MiB}
  logging: {maxSize: 10MiB, maxFiles: 14}
  ulimits: {nofile: 65536, core: {soft: 0, hard: unlimited}}
  sysctls: {net.core.somaxconn: 4096}
  user: 1000
  workingDir: /srv
  readOnly: true
  capAdd: [net_bind_service]
  capDrop: [ALL]
  stopSignal: quit
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec:
  image: agent:1
  port: 8080
  resources: {memory: 64MiB}
  logging: {maxSize: 1MiB}
  readOnly: true
"
            .into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"));
        let f = out.fleet;
        let c = service_container(&f, &f.services["web"], 0, "node1");
        let k = &c.knobs;
        assert_eq!(k.log_max_size, Some(10 << 20));
        assert_eq!(k.log_max_files, Some(14));
        assert_eq!(k.ulimits["nofile"].soft, 65536);
        assert_eq!(k.ulimits["nofile"].hard, 65536);
        assert_eq!((k.ulimits["core"].soft, k.ulimits["core"].hard), (0, -1));
        assert_eq!(k.sysctls["net.core.somaxconn"], "4096");
        assert_eq!(k.user.as_deref(), Some("1000"));
        assert_eq!(k.working_dir.as_deref(), Some("/srv"));
        assert!(k.read_only);
        assert_eq!(k.cap_add, vec!["CAP_NET_BIND_SERVICE".to_string()]);
        assert_eq!(k.cap_drop, vec!["ALL".to_string()]);
        assert_eq!(k.stop_signal.as_deref(), Some("SIGQUIT"));
        let p = plug_container(
            &f,
            &f.plug_classes["agent"],
            &PlugIdentity {
                id: "p1",
                owner: "o",
                node: "node1",
                host_port: 0,
            },
        );
        assert_eq!(p.knobs.log_max_size, Some(1 << 20));
        assert!(p.knobs.read_only);
    }
}
