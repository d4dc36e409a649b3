//! Raw manifest types: the YAML as written, every field optional and positioned, nothing
//! defaulted or cross-checked yet (that is `validate`'s job). The JSON Schema printed by
//! `fleetctl schema` is generated from these types, so the schema and the decoder describe the
//! same fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;

use super::decode::{Cx, Decode, Dur, Fields, Sp, Text, join, suggest};
use super::quantity::{Bytes, MilliCpus, Percent};
use super::yaml::{Pos, Value, YNode};

/// Implements [`Decode`] for a raw struct: each listed field is read as required (`req`) or
/// optional (`opt`) under its YAML key, and unknown keys are reported.
macro_rules! decode_struct {
    ($name:ident { $($kind:ident $field:ident = $key:literal),* $(,)? }) => {
        impl Decode for $name {
            fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
                let mut f = Fields::of(node, path, cx)?;
                let out = $name {
                    pos: node.pos,
                    $($field: f.$kind($key, cx),)*
                };
                f.finish(cx);
                Some(out)
            }
        }
    };
}

/// A map of names to scalars written as text (labels, node selectors).
pub type TextMap = BTreeMap<Sp<String>, Sp<Text>>;

/// `env` of kinds `Service` and `PlugClass`: variable names to values.
pub type EnvMap = BTreeMap<Sp<String>, Sp<EnvValue>>;

/// One value of `env`: a scalar kept as written, or `{secret: NAME}` (SPEC §12).
#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    /// A string, number or boolean, as written.
    Text(Text),
    /// `{secret: NAME}`: the value of the Secret `NAME`, read at apply time.
    Secret(Sp<String>),
}

impl EnvValue {
    /// The plain value, if this is not a secret.
    pub fn text(&self) -> Option<&str> {
        match self {
            EnvValue::Text(t) => Some(&t.0),
            EnvValue::Secret(_) => None,
        }
    }
}

/// What an environment value may be, for messages.
const ENV_VALUE_FORMS: &str = "a string, number or boolean, or {secret: NAME}";

impl Decode for EnvValue {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            return match node.scalar_text() {
                Some(s) => Some(EnvValue::Text(Text(s))),
                None => {
                    cx.err(
                        node.pos,
                        path,
                        format!(
                            "expected {ENV_VALUE_FORMS}, found {}",
                            node.value.describe()
                        ),
                    );
                    None
                }
            };
        };
        if entries.is_empty() {
            cx.err(
                node.pos,
                path,
                format!("expected {ENV_VALUE_FORMS}, found an empty mapping"),
            );
            return None;
        }
        let mut secret = None;
        let mut ok = true;
        for (k, v) in entries {
            match k.scalar_text().as_deref() {
                Some("secret") => {
                    secret = Sp::<String>::decode(v, &join(path, "secret"), cx);
                    ok &= secret.is_some();
                }
                Some(other) => {
                    let hint = suggest(other, &["secret"])
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    cx.err(
                        k.pos,
                        &join(path, other),
                        format!(
                            "unknown field `{other}` in an environment value: write \
                             {ENV_VALUE_FORMS}{hint}"
                        ),
                    );
                    ok = false;
                }
                None => {
                    cx.err(k.pos, path, "expected a field name");
                    ok = false;
                }
            }
        }
        match secret {
            Some(s) if ok => Some(EnvValue::Secret(s)),
            _ => None,
        }
    }
}

impl JsonSchema for EnvValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvValue".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A value written as a string, number or boolean, or {secret: NAME}: the value of the Secret NAME, read when the manifests are applied.",
            "oneOf": [
                {"type": "string"},
                {"type": "number"},
                {"type": "boolean"},
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["secret"],
                    "properties": {
                        "secret": {
                            "description": "Name of a Secret document.",
                            "type": "string",
                            "pattern": "^[a-z][a-z0-9-]{0,39}$"
                        }
                    }
                }
            ]
        })
    }
}

/// A file mode written as a quoted octal string (`"0400"`, `"644"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Decode for FileMode {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => {
                if (3..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    u32::from_str_radix(s, 8).ok().map(FileMode)
                } else {
                    cx.err(
                        node.pos,
                        path,
                        format!("invalid mode {s:?}: write 3 or 4 octal digits, e.g. \"0400\""),
                    );
                    None
                }
            }
            Value::Int(_) | Value::Float(_) => {
                let text = node.scalar_text().unwrap_or_default();
                cx.err(
                    node.pos,
                    path,
                    format!(
                        "write the mode quoted, as mode: \"{text}\"; YAML reads an unquoted \
                         {text} as a number (decimal in YAML 1.2, octal in YAML 1.1), so it \
                         is not taken as a mode"
                    ),
                );
                None
            }
            _ => {
                cx.err(
                    node.pos,
                    path,
                    format!(
                        "expected a quoted octal mode such as \"0400\", found {}",
                        node.value.describe()
                    ),
                );
                None
            }
        }
    }
}

impl JsonSchema for FileMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FileMode".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "File mode as a quoted octal string, e.g. \"0400\" (unquoted, YAML reads it as a number).",
            "type": "string",
            "pattern": "^[0-7]{3,4}$"
        })
    }
}

/// `metadata` of every document.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMetadata {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Lowercase letters, digits and `-`, starting with a letter, at most 40 characters; unique
    /// per kind.
    #[schemars(required, regex(pattern = r"^[a-z][a-z0-9-]{0,39}$"))]
    pub name: Option<Sp<String>>,
    /// Free-form labels; node labels are matched by `nodeSelector`s.
    pub labels: Option<TextMap>,
}
decode_struct!(RawMetadata { req name = "name", opt labels = "labels" });

/// `spec` of kind `Fleet`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFleetSpec {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Period of the full reconcile in `fleetctl run` (default 30s).
    pub resync: Option<Sp<Dur>>,
    /// A node unreachable this long becomes NotReady and its plugs are placed elsewhere
    /// (default 60s).
    pub node_lost_after: Option<Sp<Dur>>,
    /// The controller API.
    pub api: Option<RawApi>,
    /// The network every service and plug container joins (SPEC §10).
    pub network: Option<RawNetwork>,
    /// Credentials for private registries (default: the operator's ~/.docker/config.json
    /// alone). A registry listed here is not looked up there.
    pub registries: Option<Vec<RawRegistry>>,
    /// Share of a node's disk (the filesystem of the engine's data root) above which
    /// `fleetctl run` removes the images that no container of the node uses and the applied
    /// manifests do not name (default: never).
    pub disk_high_watermark: Option<Sp<Percent>>,
    /// How long the state's event log keeps an event (`fleetctl events`); older ones are
    /// deleted by `apply` and, every `resync`, by `fleetctl run` (default 90 days: `2160h`).
    pub event_retention: Option<Sp<Dur>>,
}
decode_struct!(RawFleetSpec {
    opt resync = "resync",
    opt node_lost_after = "nodeLostAfter",
    opt api = "api",
    opt network = "network",
    opt registries = "registries",
    opt disk_high_watermark = "diskHighWatermark",
    opt event_retention = "eventRetention",
});

/// One entry of `spec.registries` of kind `Fleet`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["passwordFile"]}, {"required": ["passwordEnv"]}]))]
pub struct RawRegistry {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Registry host as image references name it, with an optional port and no scheme or
    /// path: registry.example.com, 10.0.0.5:5000, docker.io.
    #[schemars(
        required,
        regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")
    )]
    pub host: Option<Sp<String>>,
    /// User name.
    #[schemars(required)]
    pub username: Option<Sp<String>>,
    /// File holding the password or token, read on the operator's machine (~/ is the home
    /// directory; a relative path is relative to this manifest's directory). Give this or
    /// passwordEnv.
    pub password_file: Option<Sp<String>>,
    /// Environment variable holding the password or token. Give this or passwordFile.
    pub password_env: Option<Sp<String>>,
}
decode_struct!(RawRegistry {
    req host = "host",
    req username = "username",
    opt password_file = "passwordFile",
    opt password_env = "passwordEnv",
});

/// `spec.network` of kind `Fleet`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNetwork {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// auto (default: bridge on a one-node fleet, overlay on 2+ nodes), bridge (one network
    /// per node; names resolve on that node) or overlay (one network across the nodes).
    #[schemars(regex(pattern = r"^(auto|bridge|overlay)$"))]
    pub mode: Option<Sp<String>>,
    /// IPv4 subnet in CIDR form, e.g. 10.240.0.0/16 (default: the engine's choice); must not
    /// overlap the nodes' addresses or the engines' default bridge.
    pub subnet: Option<Sp<String>>,
    /// Encrypt overlay traffic between nodes with IPsec (default false); needed when nodes
    /// talk over the public Internet.
    pub encrypted: Option<Sp<bool>>,
    /// MTU of the network (default: the engine's), e.g. 1450 where the provider's is lower.
    pub mtu: Option<Sp<u32>>,
}
decode_struct!(RawNetwork { opt mode = "mode", opt subnet = "subnet", opt encrypted = "encrypted", opt mtu = "mtu" });

/// `spec.api` of kind `Fleet`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawApi {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Address the controller API listens on (default 127.0.0.1:7411).
    pub listen: Option<Sp<String>>,
    /// File holding the bearer token API requests must carry.
    pub token_file: Option<Sp<String>>,
}
decode_struct!(RawApi { opt listen = "listen", opt token_file = "tokenFile" });

/// `spec` of kind `Node`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNodeSpec {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// How to reach the node over SSH; omit for a node reached through a local socket.
    pub ssh: Option<RawSsh>,
    /// The node's Docker Engine (or Podman's Docker-compatible service).
    pub docker: Option<RawDocker>,
    /// What the node has; omitted fields are read from the engine.
    pub capacity: Option<RawCapacity>,
    /// Kept for the OS and non-fleet processes.
    pub reserved: Option<RawReserved>,
    /// IP address the other nodes reach this one at, on a private network (default: ssh.host).
    pub address: Option<Sp<String>>,
}
decode_struct!(RawNodeSpec { opt ssh = "ssh", opt docker = "docker", opt capacity = "capacity", opt reserved = "reserved", opt address = "address" });

/// `spec.ssh` of kind `Node`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSsh {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Address or host name.
    #[schemars(required)]
    pub host: Option<Sp<String>>,
    /// SSH port (default 22).
    pub port: Option<Sp<u16>>,
    /// Login user (default: the current user). It must be allowed to use the Docker socket.
    pub user: Option<Sp<String>>,
    /// Private key (default: ssh-agent, then ~/.ssh/id_ed25519).
    pub identity_file: Option<Sp<String>>,
    /// Pinned host key, e.g. "ssh-ed25519 AAAAC3Nz..."; else knownHostsFile is consulted.
    pub host_key: Option<Sp<String>>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    pub known_hosts_file: Option<Sp<String>>,
}
decode_struct!(RawSsh {
    req host = "host",
    opt port = "port",
    opt user = "user",
    opt identity_file = "identityFile",
    opt host_key = "hostKey",
    opt known_hosts_file = "knownHostsFile",
});

/// `spec.docker` of kind `Node`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawDocker {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Docker socket path on the node (default /var/run/docker.sock).
    pub socket: Option<Sp<String>>,
    /// The engine behind the socket: docker (default) or podman (its Docker-compatible
    /// service). Podman cannot join a swarm: in a fleet with an overlay network, its containers
    /// get a bridge network on that node only.
    #[schemars(regex(pattern = r"^(docker|podman)$"))]
    pub engine: Option<Sp<String>>,
}
decode_struct!(RawDocker { opt socket = "socket", opt engine = "engine" });

/// `spec.capacity` of kind `Node`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCapacity {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// CPUs, e.g. 4 or 0.5 or 500m.
    pub cpus: Option<Sp<MilliCpus>>,
    /// Memory, e.g. 8GiB.
    pub memory: Option<Sp<Bytes>>,
    /// Disk, e.g. 100GiB.
    pub disk: Option<Sp<Bytes>>,
}
decode_struct!(RawCapacity { opt cpus = "cpus", opt memory = "memory", opt disk = "disk" });

/// `spec.reserved` of kind `Node`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawReserved {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// CPUs kept back.
    pub cpus: Option<Sp<MilliCpus>>,
    /// Memory kept back.
    pub memory: Option<Sp<Bytes>>,
}
decode_struct!(RawReserved { opt cpus = "cpus", opt memory = "memory" });

/// `spec` of kind `Service`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawServiceSpec {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Image reference.
    #[schemars(required)]
    pub image: Option<Sp<String>>,
    /// When nodes pull the image: missing (default: when the node lacks it), always (on every
    /// apply that touches it, following a moved tag), never (only what the node has) or fleet
    /// (as missing, and copied from another node or the operator's engine when the registry
    /// cannot serve a node).
    #[schemars(regex(pattern = r"^(missing|always|never|fleet)$"))]
    pub pull: Option<Sp<String>>,
    /// Number of containers (default 1).
    pub replicas: Option<Sp<u32>>,
    /// Where replicas may run (default: any node).
    pub placement: Option<RawPlacement>,
    /// Limits; `memory` is required.
    #[schemars(required)]
    pub resources: Option<RawResources>,
    /// Command (overrides the image's).
    pub command: Option<Sp<Vec<Sp<String>>>>,
    /// Environment variables: a plain value, or {secret: NAME}.
    pub env: Option<EnvMap>,
    /// Published ports: "HOST:CONTAINER", "IP:HOST:CONTAINER", with optional /tcp or /udp.
    pub ports: Option<Vec<Sp<String>>>,
    /// Volumes and binds: "NAME:/path" or "/host/path:/path[:ro]".
    pub volumes: Option<Vec<Sp<String>>>,
    /// Restart policy: always, unless-stopped, on-failure or no (default unless-stopped).
    #[schemars(regex(pattern = r"^(always|unless-stopped|on-failure|no)$"))]
    pub restart: Option<Sp<String>>,
    /// Docker healthcheck.
    pub healthcheck: Option<RawHealthcheck>,
    /// How containers are replaced.
    pub update: Option<RawUpdate>,
    /// Time between SIGTERM and SIGKILL when stopping (default: the engine's 10s).
    pub stop_grace_period: Option<Sp<Dur>>,
    /// fleet (default: the fleet's network, where the service's name resolves), host (the
    /// node's network stack; no published ports) or none.
    #[schemars(regex(pattern = r"^(fleet|host|none)$"))]
    pub network: Option<Sp<String>>,
    /// Extra names the service answers to on the fleet's network.
    pub aliases: Option<Vec<Sp<String>>>,
    /// Secrets placed as files in each container.
    pub secrets: Option<Vec<RawSecretMount>>,
    /// Config files placed in each container.
    pub configs: Option<Vec<RawConfigMount>>,
    /// json-file log rotation: {maxSize: 10MiB, maxFiles: 14} (default: the engine's logging).
    pub logging: Option<RawLogging>,
    /// Ulimits by name (nofile, nproc, core, memlock, stack, ...): a number (soft = hard),
    /// `unlimited`, or {soft, hard}.
    pub ulimits: Option<BTreeMap<Sp<String>, Sp<RawUlimit>>>,
    /// Namespaced kernel parameters (net.*, kernel.msg*, kernel.sem, kernel.shm*,
    /// fs.mqueue.*), e.g. {net.core.somaxconn: 4096}; others would change the whole node and
    /// are refused.
    pub sysctls: Option<TextMap>,
    /// User the process runs as: uid[:gid] or a name (default: the image's).
    pub user: Option<Sp<Text>>,
    /// Absolute working directory (default: the image's).
    pub working_dir: Option<Sp<String>>,
    /// Mount the root filesystem read-only (default false).
    pub read_only: Option<Sp<bool>>,
    /// Linux capabilities to add, e.g. NET_ADMIN (the CAP_ prefix is optional).
    pub cap_add: Option<Vec<Sp<String>>>,
    /// Linux capabilities to drop, e.g. ALL or NET_RAW (the CAP_ prefix is optional).
    pub cap_drop: Option<Vec<Sp<String>>>,
    /// Signal that stops the container: SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2,
    /// SIGKILL or a number 1-31 (default: the image's, else SIGTERM).
    pub stop_signal: Option<Sp<Text>>,
    /// Replica count driven by sustained CPU and memory use, between min and max; `replicas`
    /// is then the starting count (SPEC §14).
    pub autoscale: Option<Box<RawAutoscale>>,
}
decode_struct!(RawServiceSpec {
    opt autoscale = "autoscale",
    opt network = "network",
    opt aliases = "aliases",
    req image = "image",
    opt pull = "pull",
    opt replicas = "replicas",
    opt placement = "placement",
    req resources = "resources",
    opt command = "command",
    opt env = "env",
    opt ports = "ports",
    opt volumes = "volumes",
    opt restart = "restart",
    opt healthcheck = "healthcheck",
    opt update = "update",
    opt stop_grace_period = "stopGracePeriod",
    opt secrets = "secrets",
    opt configs = "configs",
    opt logging = "logging",
    opt ulimits = "ulimits",
    opt sysctls = "sysctls",
    opt user = "user",
    opt working_dir = "workingDir",
    opt read_only = "readOnly",
    opt cap_add = "capAdd",
    opt cap_drop = "capDrop",
    opt stop_signal = "stopSignal",
});

/// One entry of `spec.secrets` of kinds `Service` and `PlugClass`: a secret as a file.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSecretMount {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Name of a Secret document.
    #[schemars(required, regex(pattern = r"^[a-z][a-z0-9-]{0,39}$"))]
    pub name: Option<Sp<String>>,
    /// Absolute path of the file in the container (default /run/secrets/NAME).
    pub target: Option<Sp<String>>,
    /// File mode, quoted octal (default "0400").
    pub mode: Option<Sp<FileMode>>,
    /// Owner's user id (default 0).
    pub uid: Option<Sp<u32>>,
    /// Group id (default 0).
    pub gid: Option<Sp<u32>>,
}
decode_struct!(RawSecretMount {
    req name = "name",
    opt target = "target",
    opt mode = "mode",
    opt uid = "uid",
    opt gid = "gid",
});

/// One entry of `spec.configs` of kinds `Service` and `PlugClass`: a file of the manifests'
/// directory, placed in the container.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfigMount {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// The file to place, read when the manifests are loaded: relative to the directory of
    /// this manifest file, or absolute; at most 1 MiB.
    #[schemars(required)]
    pub source: Option<Sp<String>>,
    /// Absolute path of the file in the container.
    #[schemars(required)]
    pub target: Option<Sp<String>>,
    /// File mode, quoted octal (default "0444").
    pub mode: Option<Sp<FileMode>>,
    /// Owner's user id (default 0).
    pub uid: Option<Sp<u32>>,
    /// Group id (default 0).
    pub gid: Option<Sp<u32>>,
}
decode_struct!(RawConfigMount {
    req source = "source",
    req target = "target",
    opt mode = "mode",
    opt uid = "uid",
    opt gid = "gid",
});

/// `spec` of kind `Secret`: where the value is read (exactly one of `file`, `env`, `command`).
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["file"]}, {"required": ["env"]}, {"required": ["command"]}]))]
pub struct RawSecretSpec {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// File holding the value, read on the machine that applies (~/ is the home directory; a
    /// relative path is relative to this manifest's directory). One trailing newline is not
    /// part of the value.
    pub file: Option<Sp<String>>,
    /// Environment variable holding the value, in the process that applies.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub env: Option<Sp<String>>,
    /// Program (and arguments, as a list; no shell) whose standard output is the value, run
    /// when the manifests are applied.
    pub command: Option<Sp<Vec<Sp<String>>>>,
}

impl Decode for RawSecretSpec {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::of(node, path, cx)?;
        if !["file", "env", "command"].iter().any(|k| f.has(k)) {
            cx.err(
                node.pos,
                path,
                "give one of file, env or command: where the value is read (the value itself \
                 never goes in a manifest)",
            );
        }
        let out = RawSecretSpec {
            pos: node.pos,
            file: f.opt("file", cx),
            env: f.opt("env", cx),
            command: f.opt("command", cx),
        };
        f.finish(cx);
        Some(out)
    }
}

/// `spec.placement` of kind `Service`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPlacement {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Allowed nodes.
    pub nodes: Option<Vec<Sp<String>>>,
    /// Node labels that must all match.
    pub node_selector: Option<TextMap>,
    /// At most this many replicas per node.
    pub max_per_node: Option<Sp<u32>>,
}
decode_struct!(RawPlacement { opt nodes = "nodes", opt node_selector = "nodeSelector", opt max_per_node = "maxPerNode" });

/// `spec.resources` of kinds `Service` and `PlugClass`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawResources {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Hard memory limit, e.g. 256MiB.
    #[schemars(required)]
    pub memory: Option<Sp<Bytes>>,
    /// Soft memory limit.
    pub memory_reservation: Option<Sp<Bytes>>,
    /// CPU quota, e.g. 0.5.
    pub cpus: Option<Sp<MilliCpus>>,
    /// Relative CPU weight (Docker default 1024).
    pub cpu_shares: Option<Sp<u64>>,
    /// Allowed CPUs, e.g. "2-3" or "0,2".
    pub cpuset: Option<Sp<Text>>,
}
decode_struct!(RawResources {
    req memory = "memory",
    opt memory_reservation = "memoryReservation",
    opt cpus = "cpus",
    opt cpu_shares = "cpuShares",
    opt cpuset = "cpuset",
});

/// `spec.healthcheck` of kinds `Service` and `PlugClass`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHealthcheck {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// ["CMD", ...], ["CMD-SHELL", "..."], or a string run by the shell.
    #[schemars(required)]
    pub command: Option<Sp<HealthCommand>>,
    /// Time between checks.
    pub interval: Option<Sp<Dur>>,
    /// Time one check may take.
    pub timeout: Option<Sp<Dur>>,
    /// Failures in a row before the container is unhealthy.
    pub retries: Option<Sp<u32>>,
    /// Grace period after start.
    pub start_period: Option<Sp<Dur>>,
}
decode_struct!(RawHealthcheck {
    req command = "command",
    opt interval = "interval",
    opt timeout = "timeout",
    opt retries = "retries",
    opt start_period = "startPeriod",
});

/// Schema of a healthcheck command: a list or a shell string.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)] // only its schema is used
enum HealthcheckCommandSchema {
    List(Vec<String>),
    Shell(String),
}

/// `spec.update` of kind `Service`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawUpdate {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// start-first or stop-first (default stop-first when host ports are published, else
    /// start-first).
    #[schemars(regex(pattern = r"^(start-first|stop-first)$"))]
    pub order: Option<Sp<String>>,
}
decode_struct!(RawUpdate { opt order = "order" });

/// `spec` of kind `PlugClass`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPlugClassSpec {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Image reference.
    #[schemars(required)]
    pub image: Option<Sp<String>>,
    /// When nodes pull the image: missing (default: when the node lacks it), always (on every
    /// apply that touches it, following a moved tag), never (only what the node has) or fleet
    /// (as missing, and copied from another node or the operator's engine when the registry
    /// cannot serve a node).
    #[schemars(regex(pattern = r"^(missing|always|never|fleet)$"))]
    pub pull: Option<Sp<String>>,
    /// Limits of each instance; `memory` is required.
    #[schemars(required)]
    pub resources: Option<RawResources>,
    /// Command (overrides the image's).
    pub command: Option<Sp<Vec<Sp<String>>>>,
    /// Container port of each instance.
    #[schemars(required)]
    pub port: Option<Sp<u16>>,
    /// Host port range, e.g. 51000-51999; each instance leases a free port on its node. Omit it
    /// for plugs reached only on the fleet's network, at plug-<id>:<port>.
    #[schemars(regex(pattern = r"^[0-9]{1,5}(-[0-9]{1,5})?$"))]
    pub host_ports: Option<Sp<Text>>,
    /// Environment variables: a plain value, or {secret: NAME}.
    pub env: Option<EnvMap>,
    /// Docker healthcheck.
    pub healthcheck: Option<RawHealthcheck>,
    /// Stop an instance idle this long; 0 = never (default).
    pub idle_timeout: Option<Sp<Dur>>,
    /// PlacementPolicy name (default: the policy named `default`, if any).
    pub policy: Option<Sp<String>>,
    /// Secrets placed as files in each instance.
    pub secrets: Option<Vec<RawSecretMount>>,
    /// Config files placed in each instance.
    pub configs: Option<Vec<RawConfigMount>>,
    /// json-file log rotation: {maxSize: 10MiB, maxFiles: 14} (default: the engine's logging).
    pub logging: Option<RawLogging>,
    /// Ulimits by name (nofile, nproc, core, memlock, stack, ...): a number (soft = hard),
    /// `unlimited`, or {soft, hard}.
    pub ulimits: Option<BTreeMap<Sp<String>, Sp<RawUlimit>>>,
    /// Namespaced kernel parameters (net.*, kernel.msg*, kernel.sem, kernel.shm*,
    /// fs.mqueue.*), e.g. {net.core.somaxconn: 4096}; others would change the whole node and
    /// are refused.
    pub sysctls: Option<TextMap>,
    /// User the process runs as: uid[:gid] or a name (default: the image's).
    pub user: Option<Sp<Text>>,
    /// Absolute working directory (default: the image's).
    pub working_dir: Option<Sp<String>>,
    /// Mount the root filesystem read-only (default false).
    pub read_only: Option<Sp<bool>>,
    /// Linux capabilities to add, e.g. NET_ADMIN (the CAP_ prefix is optional).
    pub cap_add: Option<Vec<Sp<String>>>,
    /// Linux capabilities to drop, e.g. ALL or NET_RAW (the CAP_ prefix is optional).
    pub cap_drop: Option<Vec<Sp<String>>>,
    /// Signal that stops the container: SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2,
    /// SIGKILL or a number 1-31 (default: the image's, else SIGTERM).
    pub stop_signal: Option<Sp<Text>>,
}
decode_struct!(RawPlugClassSpec {
    req image = "image",
    opt pull = "pull",
    req resources = "resources",
    opt command = "command",
    req port = "port",
    opt host_ports = "hostPorts",
    opt env = "env",
    opt healthcheck = "healthcheck",
    opt idle_timeout = "idleTimeout",
    opt policy = "policy",
    opt secrets = "secrets",
    opt configs = "configs",
    opt logging = "logging",
    opt ulimits = "ulimits",
    opt sysctls = "sysctls",
    opt user = "user",
    opt working_dir = "workingDir",
    opt read_only = "readOnly",
    opt cap_add = "capAdd",
    opt cap_drop = "capDrop",
    opt stop_signal = "stopSignal",
});

/// `spec.autoscale` of kind `Service`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAutoscale {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Fewest replicas, at least 1.
    #[schemars(required, range(min = 1))]
    pub min: Option<Sp<u32>>,
    /// Most replicas, at least min.
    #[schemars(required, range(min = 1))]
    pub max: Option<Sp<u32>>,
    /// CPU use of the replicas (share of their `resources.cpus`, else of one CPU).
    pub cpu: Option<RawLoadRule>,
    /// Memory use of the replicas (share of their `resources.memory`).
    pub memory: Option<RawLoadRule>,
    /// Time after a scale during which no other scale is made (default 3m).
    pub cooldown: Option<Sp<Dur>>,
}
decode_struct!(RawAutoscale {
    req min = "min",
    req max = "max",
    opt cpu = "cpu",
    opt memory = "memory",
    opt cooldown = "cooldown",
});

/// One rule of `spec.autoscale`: scale up when the replicas' mean stays above `above` for
/// `for`; scale down when it stays below `below` for `belowFor`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLoadRule {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Use above which a replica is added once sustained for `for`.
    #[schemars(required)]
    pub above: Option<Sp<Percent>>,
    /// How long `above` must hold (default 5m).
    #[schemars(rename = "for")]
    pub for_: Option<Sp<Dur>>,
    /// Use below which a replica is removed once sustained for `belowFor` (and every other
    /// rule agrees); without it, this rule agrees when its use stayed at or under `above`.
    pub below: Option<Sp<Percent>>,
    /// How long `below` must hold (default 15m).
    pub below_for: Option<Sp<Dur>>,
}
decode_struct!(RawLoadRule {
    req above = "above",
    opt for_ = "for",
    opt below = "below",
    opt below_for = "belowFor",
});

/// `spec.cpuHighWatermark` of kind `PlacementPolicy`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHotRule {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Share of the node's CPUs in use above which the node is hot.
    #[schemars(required)]
    pub above: Option<Sp<Percent>>,
    /// How long it must stay above to become hot, and below to cool again (default 5m).
    #[schemars(rename = "for")]
    pub for_: Option<Sp<Dur>>,
}
decode_struct!(RawHotRule { req above = "above", opt for_ = "for" });

/// `spec` of kind `PlacementPolicy`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPolicySpec {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Per-VPS cap, counted over all plug instances on the node.
    pub max_plugs_per_node: Option<Sp<u32>>,
    /// Share of a node's allocatable memory (capacity - reserved) that limits and measured use
    /// may reach (default 100%).
    pub memory_high_watermark: Option<Sp<Percent>>,
    /// Node groups tried in order; a later tier is used only when no node of the earlier tiers
    /// can take the plug (default: one tier of every node).
    pub tiers: Option<Vec<RawTier>>,
    /// pack: fill the fullest node that fits first; spread: least loaded first (default pack).
    #[schemars(regex(pattern = r"^(pack|spread)$"))]
    pub spread: Option<Sp<String>>,
    /// Memory use above the watermark stops the most idle plugs first (default false).
    pub evict_idle_on_pressure: Option<Sp<bool>>,
    /// A node whose CPU use stays above this for `for` takes no new plug until it has stayed
    /// below it as long (default: never hot).
    pub cpu_high_watermark: Option<RawHotRule>,
}
decode_struct!(RawPolicySpec {
    opt cpu_high_watermark = "cpuHighWatermark",
    opt max_plugs_per_node = "maxPlugsPerNode",
    opt memory_high_watermark = "memoryHighWatermark",
    opt tiers = "tiers",
    opt spread = "spread",
    opt evict_idle_on_pressure = "evictIdleOnPressure",
});

/// One tier of a `PlacementPolicy`.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTier {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Node labels that must all match.
    pub node_selector: Option<TextMap>,
    /// Nodes by name.
    pub nodes: Option<Vec<Sp<String>>>,
}
decode_struct!(RawTier { opt node_selector = "nodeSelector", opt nodes = "nodes" });

/// A healthcheck command: a list of strings, or one string run by the shell (`CMD-SHELL`).
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(transparent)]
pub struct HealthCommand(
    /// The test, in Docker's form (`["CMD", ...]` or `["CMD-SHELL", "..."]`).
    #[schemars(with = "HealthcheckCommandSchema")]
    pub Vec<String>,
);

impl Decode for HealthCommand {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            super::yaml::Value::Str(s) => {
                Some(HealthCommand(vec!["CMD-SHELL".to_string(), s.clone()]))
            }
            _ => Vec::<String>::decode(node, path, cx).map(HealthCommand),
        }
    }
}

/// The kinds of SPEC §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `Fleet`.
    Fleet,
    /// `Node`.
    Node,
    /// `Service`.
    Service,
    /// `PlugClass`.
    PlugClass,
    /// `PlacementPolicy`.
    PlacementPolicy,
    /// `Secret`.
    Secret,
}

impl Kind {
    /// Every kind, in the order documents are best written.
    pub const ALL: [Kind; 6] = [
        Kind::Fleet,
        Kind::Node,
        Kind::Secret,
        Kind::Service,
        Kind::PlugClass,
        Kind::PlacementPolicy,
    ];

    /// The `kind:` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fleet => "Fleet",
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::PlugClass => "PlugClass",
            Kind::PlacementPolicy => "PlacementPolicy",
            Kind::Secret => "Secret",
        }
    }
}

/// The decoded `spec` of one document.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSpec {
    /// A Fleet.
    Fleet(RawFleetSpec),
    /// A Node.
    Node(RawNodeSpec),
    /// A Service.
    Service(RawServiceSpec),
    /// A PlugClass.
    PlugClass(RawPlugClassSpec),
    /// A PlacementPolicy.
    PlacementPolicy(RawPolicySpec),
    /// A Secret.
    Secret(RawSecretSpec),
}

/// One decoded document.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDocument {
    /// File it came from.
    pub file: String,
    /// Position of the document.
    pub pos: Pos,
    /// Its kind.
    pub kind: Kind,
    /// `metadata`.
    pub metadata: RawMetadata,
    /// `spec`, if it decoded (errors are already recorded otherwise).
    pub spec: Option<RawSpec>,
}

/// The only `apiVersion` of this release.
pub const API_VERSION: &str = "fleet/v1";

/// Decodes one document; returns `None` when it is too broken to say what it is (the errors
/// are recorded).
pub fn decode_document(node: &YNode, cx: &mut Cx) -> Option<RawDocument> {
    let mut f = Fields::of(node, "", cx)?;
    let api: Option<Sp<String>> = f.req("apiVersion", cx);
    if let Some(api) = &api
        && api.value != API_VERSION
    {
        cx.err(
            api.pos,
            "apiVersion",
            format!(
                "unsupported apiVersion {:?}; this fleetctl reads {API_VERSION:?}",
                api.value
            ),
        );
    }
    let kind_node: Option<Sp<String>> = f.req("kind", cx);
    let kind = kind_node.as_ref().and_then(|k| {
        let kind = Kind::ALL.into_iter().find(|x| x.as_str() == k.value);
        if kind.is_none() {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            let hint = super::decode::suggest(&k.value, &names)
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_else(|| format!("; kinds are {}", names.join(", ")));
            cx.err(k.pos, "kind", format!("unknown kind {:?}{hint}", k.value));
        }
        kind
    });
    let metadata: Option<RawMetadata> = f.req("metadata", cx);
    let spec_node = f.node("spec");
    let spec = match (kind, spec_node) {
        (Some(kind), Some(n)) if n.value != super::yaml::Value::Null => match kind {
            Kind::Fleet => RawFleetSpec::decode(n, "spec", cx).map(RawSpec::Fleet),
            Kind::Node => RawNodeSpec::decode(n, "spec", cx).map(RawSpec::Node),
            Kind::Service => RawServiceSpec::decode(n, "spec", cx).map(RawSpec::Service),
            Kind::PlugClass => RawPlugClassSpec::decode(n, "spec", cx).map(RawSpec::PlugClass),
            Kind::PlacementPolicy => {
                RawPolicySpec::decode(n, "spec", cx).map(RawSpec::PlacementPolicy)
            }
            Kind::Secret => RawSecretSpec::decode(n, "spec", cx).map(RawSpec::Secret),
        },
        (Some(Kind::Fleet), _) => Some(RawSpec::Fleet(RawFleetSpec::default())),
        (Some(Kind::PlacementPolicy), _) => {
            Some(RawSpec::PlacementPolicy(RawPolicySpec::default()))
        }
        (Some(Kind::Node), _) => Some(RawSpec::Node(RawNodeSpec::default())),
        (Some(_), _) => {
            cx.err(
                node.pos,
                "spec",
                "missing required field `spec` in the document",
            );
            None
        }
        (None, _) => None,
    };
    f.finish(cx);
    Some(RawDocument {
        file: cx.file.to_string(),
        pos: node.pos,
        kind: kind?,
        metadata: metadata.unwrap_or_default(),
        spec,
    })
}

/// `spec.logging` of kinds `Service` and `PlugClass`: rotation by the engine's json-file log
/// driver.
#[derive(Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLogging {
    /// Position of the mapping.
    #[schemars(skip)]
    pub pos: Pos,
    /// Size at which a log file is rotated, e.g. 10MiB.
    pub max_size: Option<Sp<Bytes>>,
    /// Log files kept, at least 1 (default: the engine's, 1); needs maxSize.
    #[schemars(range(min = 1))]
    pub max_files: Option<Sp<u32>>,
}
decode_struct!(RawLogging { opt max_size = "maxSize", opt max_files = "maxFiles" });

/// `{soft, hard}` of one ulimit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawUlimitPair {
    /// Position of the mapping.
    pub pos: Pos,
    /// Soft limit.
    pub soft: Option<Sp<Text>>,
    /// Hard limit.
    pub hard: Option<Sp<Text>>,
}
decode_struct!(RawUlimitPair { req soft = "soft", req hard = "hard" });

/// One entry of `spec.ulimits`: a limit for both soft and hard, or `{soft, hard}`. A limit is
/// a non-negative number or `unlimited`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawUlimit {
    /// Soft = hard.
    Both(Text),
    /// Separate limits.
    Pair(RawUlimitPair),
}

impl Decode for RawUlimit {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Map(_) => RawUlimitPair::decode(node, path, cx).map(RawUlimit::Pair),
            _ => match node.scalar_text() {
                Some(s) => Some(RawUlimit::Both(Text(s))),
                None => {
                    cx.err(
                        node.pos,
                        path,
                        format!(
                            "expected a number, `unlimited` or {{soft, hard}}, found {}",
                            node.value.describe()
                        ),
                    );
                    None
                }
            },
        }
    }
}

impl JsonSchema for RawUlimit {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Ulimit".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A limit for both soft and hard (a non-negative integer or \"unlimited\"), or {soft, hard} with soft <= hard.",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^(unlimited|[0-9]+)$"},
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["soft", "hard"],
                    "properties": {
                        "soft": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^(unlimited|[0-9]+)$"}]},
                        "hard": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^(unlimited|[0-9]+)$"}]}
                    }
                }
            ]
        })
    }
}
