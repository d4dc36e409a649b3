//! Manifest validation through the library: every error class yields
//! `FILE:LINE:COLUMN: field.path: message`, all errors are reported at once, and hostile input
//! is refused quickly without a panic.

use std::time::{Duration, Instant};

use fleetctl::manifest::{Source, parse};

fn errors(text: &str) -> Vec<String> {
    match parse(&[Source {
        name: "f.yaml".into(),
        text: text.into(),
    }]) {
        Ok(_) => vec![],
        Err(e) => e
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect(),
    }
}

fn has(errs: &[String], prefix: &str, needle: &str) {
    assert!(
        errs.iter()
            .any(|e| e.starts_with(prefix) && e.contains(needle)),
        "expected an error starting {prefix:?} containing {needle:?}; got:\n{}",
        errs.join("\n")
    );
}

const NODES: &str = "apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {capacity: {cpus: 4, memory: 8GiB}, reserved: {memory: 1GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2, labels: {tier: secondary}}
spec: {capacity: {cpus: 2, memory: 2GiB}}
";

fn with_nodes(rest: &str) -> String {
    format!("{NODES}---\n{rest}")
}

#[test]
fn syntax_error_has_line_and_column() {
    let errs = errors("apiVersion: fleet/v1\nkind: [Node\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("f.yaml:"), "{}", errs[0]);
    assert!(errs[0].contains("invalid YAML"), "{}", errs[0]);
}

#[test]
fn type_errors_name_field_and_position() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  replicas: two
  resources: {memory: [1]}
",
    ));
    has(
        &errs,
        "f.yaml:16:13: spec.replicas:",
        "expected a whole number, found a string",
    );
    has(
        &errs,
        "f.yaml:17:23: spec.resources.memory:",
        "expected a size",
    );
}

#[test]
fn unknown_fields_are_errors_with_suggestions() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  resources: {memory: 256MiB, memroy: 1}
  replica: 2
",
    ));
    has(
        &errs,
        "f.yaml:16:31: spec.resources.memroy:",
        "did you mean `memory`",
    );
    has(
        &errs,
        "f.yaml:17:3: spec.replica:",
        "did you mean `replicas`",
    );
}

#[test]
fn missing_required_fields_are_reported() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {labels: {a: b}}
spec:
  resources: {cpus: 1}
",
    ));
    has(
        &errs,
        "f.yaml:13:11: metadata.name:",
        "missing required field `name`",
    );
    has(
        &errs,
        "f.yaml:15:3: spec.image:",
        "missing required field `image`",
    );
    has(
        &errs,
        "f.yaml:15:14: spec.resources.memory:",
        "missing required field `memory`",
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: a}
spec: {image: x, resources: {memory: 12XB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: b}
spec: {image: x, resources: {memory: 1GiB, cpus: lots}, restart: sometimes}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: c}
spec: {image: x, resources: {memory: 1GiB}, port: 80, hostPorts: 9-1}
",
    ));
    assert_eq!(errs.len(), 4, "{}", errs.join("\n"));
    has(&errs, "f.yaml:14:", "12XB");
    has(&errs, "f.yaml:19:", "invalid CPU amount \"lots\"");
    has(&errs, "f.yaml:19:", "unknown restart policy");
    has(&errs, "f.yaml:24:", "invalid port range \"9-1\"");
}

#[test]
fn duplicate_names_point_at_the_first() {
    let errs = errors(&format!(
        "{NODES}---\n{}",
        &NODES[..NODES.find("---").unwrap()]
    ));
    has(
        &errs,
        "f.yaml:13:",
        "duplicate Node name \"node1\"; first defined at f.yaml:3:",
    );
}

#[test]
fn bad_names_are_rejected() {
    for (name, why) in [
        ("Web", "lowercase letter"),
        ("1web", "lowercase letter"),
        ("web_1", "'_'"),
        (
            "a-very-long-name-that-goes-past-forty-chars-x",
            "at most 40",
        ),
    ] {
        let errs = errors(&with_nodes(&format!(
            "apiVersion: fleet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{image: x, resources: {{memory: 64MiB}}}}\n"
        )));
        has(&errs, "f.yaml:13:18: metadata.name:", why);
    }
}

#[test]
fn dangling_references_are_errors() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: x
  placement: {nodes: [node1, node3]}
  resources: {memory: 64MiB}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: x, resources: {memory: 64MiB}, port: 80, hostPorts: 51000-51999, policy: defualt}
",
    ));
    has(
        &errs,
        "f.yaml:16:30: spec.placement.nodes[1]:",
        "node \"node3\" does not exist",
    );
    has(
        &errs,
        "f.yaml:22:88: spec.policy:",
        "PlacementPolicy \"defualt\" does not exist",
    );
}

#[test]
fn port_clashes_on_one_node_are_errors() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: a}
spec: {image: x, placement: {nodes: [node1]}, resources: {memory: 64MiB}, ports: ['80:80']}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: b}
spec: {image: x, placement: {nodeSelector: {tier: primary}}, resources: {memory: 64MiB}, ports: ['127.0.0.1:80:8080']}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: c}
spec: {image: x, resources: {memory: 64MiB}, ports: ['80:80']}
",
    ));
    // a and b must both run on node1; c may run on node2, so it does not clash.
    assert_eq!(errs.len(), 1, "{}", errs.join("\n"));
    has(
        &errs,
        "f.yaml:19:",
        "host port 80/tcp clashes on node node1 with service \"a\"",
    );
}

#[test]
fn impossible_requests_are_errors() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: huge}
spec: {image: x, resources: {memory: 16GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: many}
spec: {image: x, replicas: 5, placement: {maxPerNode: 2}, resources: {memory: 64MiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: ported}
spec: {image: x, replicas: 3, resources: {memory: 64MiB}, ports: ['80:80']}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: reserve}
spec: {image: x, resources: {memory: 64MiB, memoryReservation: 128MiB}}
",
    ));
    has(
        &errs,
        "f.yaml:14:",
        "needs 16GiB but no allowed node has that much allocatable memory",
    );
    has(
        &errs,
        "f.yaml:19:",
        "5 replicas cannot fit: 2 allowed nodes",
    );
    has(&errs, "f.yaml:24:", "3 replicas cannot fit");
    has(
        &errs,
        "f.yaml:29:",
        "memoryReservation 128MiB is above the memory limit 64MiB",
    );
}

#[test]
fn pinned_services_must_fit_their_node() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: a}
spec: {image: x, placement: {nodes: [node2]}, resources: {memory: 1GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: b}
spec: {image: x, placement: {nodes: [node2]}, resources: {memory: 1536MiB}}
",
    ));
    has(
        &errs,
        "f.yaml:19:",
        "must run on node node2 (a, b) need 2.5GiB",
    );
}

#[test]
fn quantities_are_typed() {
    let loaded = parse(&[Source {
        name: "f.yaml".into(),
        text: with_nodes(
            "apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: x
  resources: {memory: 512m, memoryReservation: 256Mi, cpus: 500m, cpuShares: 512, cpuset: 0-1}
  healthcheck: {command: wget -qO- localhost, interval: 1m30s}
  stopGracePeriod: 10s
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {name: default}
spec: {memoryHighWatermark: 85%}
",
        ),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let web = &loaded.fleet.services["web"];
    assert_eq!(web.resources.memory.0, 512 << 20);
    assert_eq!(web.resources.memory_reservation.unwrap().0, 256 << 20);
    assert_eq!(web.resources.cpus.unwrap().0, 500);
    let hc = web.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, vec!["CMD-SHELL", "wget -qO- localhost"]);
    assert_eq!(hc.interval, Some(Duration::from_secs(90)));
    assert_eq!(
        loaded.fleet.policies["default"].memory_high_watermark.0,
        8500
    );
    assert_eq!(
        loaded.fleet.nodes["node1"].allocatable_memory().unwrap().0,
        7 << 30
    );
}

fn hostile(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.yaml");
    std::fs::write(&path, bytes).unwrap();
    let start = Instant::now();
    let result = fleetctl::manifest::load(&path);
    // A guard against hangs, not a performance assertion (budgets live in benchmarks).
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    let err = result.expect_err("hostile input must be refused");
    assert!(!err.diagnostics.is_empty());
    err.diagnostics[0].to_string()
}

#[test]
fn hostile_inputs_are_refused_without_panic() {
    let big = format!("a: {}\n", "x".repeat(5 * 1024 * 1024));
    assert!(hostile(big.as_bytes()).contains("limit for a manifest file"));

    let mut bomb = vec!["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]".to_string()];
    for i in 1..10u8 {
        let (n, p) = ((b'a' + i) as char, (b'a' + i - 1) as char);
        bomb.push(format!(
            "{n}: &{n} [{}]",
            vec![format!("*{p}"); 9].join(", ")
        ));
    }
    assert!(hostile(bomb.join("\n").as_bytes()).contains("alias"));

    let deep = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(hostile(deep.as_bytes()).contains("nesting deeper"));
    let deep_block: String = (0..900)
        .map(|i| format!("{}k:\n", "  ".repeat(i)))
        .collect();
    assert!(hostile(deep_block.as_bytes()).contains("nesting deeper"));

    assert!(hostile(b"kind: Node\nmetadata: {name: n\xe9}\n").contains("not valid UTF-8"));
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    hostile(&junk);
    assert!(hostile(b"").contains("no manifest documents"));
    assert!(hostile(b"a: 1\x00\n").contains("NUL"));
    assert!(hostile("---\na: 1\n".repeat(5000).as_bytes()).contains("documents"));
}

#[test]
fn directory_reads_yaml_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b-services.yaml"), "apiVersion: fleet/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: x, resources: {memory: 64MiB}}\n").unwrap();
    std::fs::write(dir.path().join("a-nodes.yml"), NODES).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not yaml: [").unwrap();
    let loaded = fleetctl::manifest::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.sources.len(), 2);
    assert!(loaded.sources[0].name.ends_with("a-nodes.yml"));
    assert_eq!(loaded.fleet.nodes.len(), 2);
    assert_eq!(loaded.fleet.services.len(), 1);
}

#[test]
fn pull_policies_resolve() {
    use fleetctl::manifest::PullPolicy;
    let text = with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec: {image: registry.example.com/aims/web:2.3, pull: always, resources: {memory: 64MiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: api}
spec: {image: api:1, resources: {memory: 64MiB}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: plug:2, pull: fleet, port: 8080, resources: {memory: 64MiB}}
",
    );
    let loaded = parse(&[Source {
        name: "f.yaml".into(),
        text,
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let f = &loaded.fleet;
    assert_eq!(f.services["web"].pull, PullPolicy::Always);
    assert_eq!(f.services["api"].pull, PullPolicy::Missing, "the default");
    assert_eq!(f.plug_classes["agent"].pull, PullPolicy::Fleet);
}

#[test]
fn bad_pull_policies_are_errors() {
    let errs = errors(&with_nodes(
        "apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec: {image: web:1, pull: sometimes, resources: {memory: 64MiB}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: plug:2, pull: Always, port: 8080, resources: {memory: 64MiB}}
",
    ));
    has(
        &errs,
        "f.yaml:14:28: spec.pull:",
        "unknown pull policy \"sometimes\"; use missing, always, never or fleet",
    );
    has(
        &errs,
        "f.yaml:19:29: spec.pull:",
        "unknown pull policy \"Always\"; use missing, always, never or fleet; did you mean `always`?",
    );
}

#[test]
fn registries_say_where_passwords_are_without_reading_them() {
    use fleetctl::manifest::PasswordSource;
    let text = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: aims}
spec:
  registries:
    - {host: registry.example.com, username: deploy, passwordFile: secrets/registry}
    - {host: ghcr.io, username: bot, passwordEnv: GHCR_TOKEN}
    - {host: 10.0.0.5:5000, username: ci, passwordFile: ~/.config/fleet/pw}
    - {host: docker.io, username: hub, passwordFile: /etc/fleet/hub}
";
    // None of the files exists and the variable is unset: validation reads neither.
    let loaded = parse(&[Source {
        name: "conf/fleet.yaml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let regs: Vec<(&str, &str, &PasswordSource)> = loaded
        .fleet
        .fleet
        .registries
        .iter()
        .map(|r| (r.host.as_str(), r.username.as_str(), &r.password))
        .collect();
    assert_eq!(
        regs,
        [
            (
                "registry.example.com",
                "deploy",
                &PasswordSource::File("conf/secrets/registry".into())
            ),
            ("ghcr.io", "bot", &PasswordSource::Env("GHCR_TOKEN".into())),
            (
                "10.0.0.5:5000",
                "ci",
                &PasswordSource::File("~/.config/fleet/pw".into())
            ),
            (
                "docker.io",
                "hub",
                &PasswordSource::File("/etc/fleet/hub".into())
            ),
        ]
    );
}

#[test]
fn bad_registries_are_errors() {
    let errs = errors(
        "apiVersion: fleet/v1
kind: Fleet
metadata: {name: aims}
spec:
  registries:
    - {host: https://ghcr.io, username: bot, passwordEnv: T}
    - {host: ghcr.io/aims, username: bot, passwordEnv: T}
    - {host: a.io, username: u, passwordFile: f, passwordEnv: T}
    - {host: b.io, username: u}
    - {host: a.io, username: u, passwordEnv: T}
    - {host: index.docker.io, username: u, passwordEnv: T}
    - {host: docker.io, username: u, passwordEnv: 1X}
    - {host: c.io, username: u, password: hunter2}
    - {host: Ghcr.IO, username: '', passwordFile: ''}
",
    );
    has(
        &errs,
        "f.yaml:6:14: spec.registries[0].host:",
        "without a scheme: \"ghcr.io\", not \"https://ghcr.io\"",
    );
    has(
        &errs,
        "f.yaml:7:14: spec.registries[1].host:",
        "without a path: \"ghcr.io\"",
    );
    has(
        &errs,
        "f.yaml:8:63: spec.registries[2].passwordEnv:",
        "not both",
    );
    has(
        &errs,
        "f.yaml:9:7: spec.registries[3]:",
        "missing passwordFile or passwordEnv",
    );
    has(
        &errs,
        "f.yaml:10:14: spec.registries[4].host:",
        "listed twice; first at f.yaml:8:14",
    );
    has(
        &errs,
        "f.yaml:12:14: spec.registries[6].host:",
        "\"index.docker.io\" at f.yaml:11:14 names the same registry",
    );
    has(
        &errs,
        "f.yaml:12:51: spec.registries[6].passwordEnv:",
        "invalid environment variable name \"1X\"",
    );
    has(
        &errs,
        "f.yaml:13:33: spec.registries[7].password:",
        "unknown field `password`",
    );
    has(
        &errs,
        "f.yaml:14:14: spec.registries[8].host:",
        "must be lowercase",
    );
    has(
        &errs,
        "f.yaml:14:33: spec.registries[8].username:",
        "username is empty",
    );
    has(
        &errs,
        "f.yaml:14:51: spec.registries[8].passwordFile:",
        "passwordFile is empty",
    );
    assert!(
        !errs.iter().any(|e| e.contains("hunter2")),
        "a password written inline is not echoed:\n{}",
        errs.join("\n")
    );
}
