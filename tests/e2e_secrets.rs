//! Secrets and config files end to end (SPEC §12), on the sandbox's real engines:
//! - a service gets a secret in its environment, another as a file (mode 0400, read back from
//!   inside the container, not in its environment), and a config file that its httpd serves;
//! - the secret values (random, made by the test) are nowhere fleetctl writes or shows: not in
//!   the state store's bytes, the output of validate/plan/apply/describe/get, the controller's
//!   log or its API's answers, nor in `docker inspect` of the file-mounted secret's container;
//! - an unchanged re-apply makes no mutating engine call; a changed secret replaces only its
//!   users, a changed config only its users; the controller reads secrets again on SIGHUP;
//! - a missing secret file: exit 1 naming the file's location, nothing changed on any node.
//!
//! Missing sandbox: `SKIPPED` outside CI, a failure under `CI=true`.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::{Fleet, IMAGE, Run, Sandbox, signal, wait_for};

const PORT: u16 = 7496;

/// A random value no output could hold by chance.
fn random_value(tag: &str) -> String {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    format!("{tag}-{}", hex::encode(bytes))
}

fn docs() -> String {
    format!(
        "apiVersion: fleet/v1
kind: Secret
metadata: {{name: db-password}}
spec: {{file: ./secrets/db-password}}
---
apiVersion: fleet/v1
kind: Secret
metadata: {{name: api-key}}
spec: {{env: E2E_SECRETS_API_KEY}}
---
apiVersion: fleet/v1
kind: Service
metadata: {{name: api}}
spec:
  image: '{IMAGE}'
  pull: never
  placement: {{nodes: [node1]}}
  resources: {{memory: 16MiB}}
  env:
    MODE: plain
    DB_PASSWORD: {{secret: db-password}}
  secrets:
    - {{name: api-key, target: /run/secrets/x, mode: '0400'}}
---
apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec:
  image: '{IMAGE}'
  pull: never
  placement: {{nodes: [node2]}}
  resources: {{memory: 16MiB}}
  configs:
    - {{source: ./conf/site.conf, target: /www/site.conf}}
  secrets:
    - {{name: api-key}}
---
apiVersion: fleet/v1
kind: Service
metadata: {{name: plain}}
spec: {{image: '{IMAGE}', pull: never, placement: {{nodes: [node3]}}, resources: {{memory: 16MiB}}}}
"
    )
}

/// Container id of `service`'s replica 0 (the fleet's only one), with its node.
fn replica(f: &Fleet, service: &str) -> (String, String) {
    for n in &f.sb.nodes {
        let out = f.sb.docker(
            n,
            &[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label=fleet.fleet={}", f.name),
                "--filter",
                &format!("label=fleet.service={service}"),
            ],
        );
        if let Some(id) = out.lines().next() {
            return (n.clone(), id.to_string());
        }
    }
    panic!("no container of {service}");
}

fn exec(sb: &Sandbox, node: &str, id: &str, script: &str) -> String {
    sb.docker(node, &["exec", id, "sh", "-c", script])
        .trim()
        .to_string()
}

#[test]
fn secrets_and_configs_reach_their_containers_leak_nowhere_and_replace_only_their_users() {
    const TEST: &str =
        "secrets_and_configs_reach_their_containers_leak_nowhere_and_replace_only_their_users";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    let db1 = random_value("db1");
    let db2 = random_value("db2");
    let key = random_value("key");
    let f = Fleet::new(&sb, "e2e-secrets", "");
    std::fs::create_dir_all(f.path().join("secrets")).unwrap();
    std::fs::create_dir_all(f.path().join("conf")).unwrap();
    std::fs::write(f.path().join("secrets/db-password"), format!("{db1}\n")).unwrap();
    std::fs::write(f.path().join("conf/site.conf"), "site v1\n").unwrap();
    f.write_with(&docs(), &format!("api: {{listen: '127.0.0.1:{PORT}'}}"));
    let dir = f.path().to_str().unwrap().to_string();
    let mut shown = String::new();
    let mut run = |args: &[&str]| {
        let out = f
            .cmd(args)
            .env("E2E_SECRETS_API_KEY", &key)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        shown.push_str(&text);
        (out.status.code().unwrap_or(-1), text)
    };

    // A missing secret file: exit 1 with its location, nothing made on any node.
    std::fs::rename(
        f.path().join("secrets/db-password"),
        f.path().join("secrets/away"),
    )
    .unwrap();
    let (code, out) = run(&["apply", &dir]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("fleet.yaml:")
            && out.contains("db-password")
            && out.contains("secrets/db-password"),
        "{out}"
    );
    assert!(f.all_ids().is_empty(), "nothing was created");
    std::fs::rename(
        f.path().join("secrets/away"),
        f.path().join("secrets/db-password"),
    )
    .unwrap();

    let (code, out) = run(&["validate", &dir]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&["plan", &dir]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(&["apply", &dir]);
    assert_eq!(code, 0, "{out}");

    // What the containers got.
    let (n1, api) = replica(&f, "api");
    assert_eq!(exec(&sb, &n1, &api, "printf %s \"$DB_PASSWORD\""), db1);
    assert_eq!(exec(&sb, &n1, &api, "cat /run/secrets/x"), key);
    assert_eq!(
        exec(&sb, &n1, &api, "stat -c '%a %u %g' /run/secrets/x"),
        "400 0 0"
    );
    assert_eq!(exec(&sb, &n1, &api, "printf %s \"$MODE\""), "plain");
    let env = exec(&sb, &n1, &api, "env");
    assert!(
        !env.contains(&key),
        "a file-mounted secret is not in the environment"
    );
    let (n2, web) = replica(&f, "web");
    assert_eq!(exec(&sb, &n2, &web, "cat /run/secrets/api-key"), key);
    assert_eq!(
        exec(&sb, &n2, &web, "wget -qO- http://127.0.0.1:8080/site.conf"),
        "site v1"
    );
    // docker inspect of the container that has the secret as a file only.
    let inspect = sb.docker(&n2, &["inspect", &web]);
    assert!(
        !inspect.contains(&key) && !inspect.contains(&db1),
        "{inspect}"
    );

    // Unchanged: a no-op, with no mutating engine call.
    let since = sb.engine_now("node1");
    let (code, out) = run(&["apply", &dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No changes"), "{out}");
    let until = sb.engine_now("node1");
    for n in &sb.nodes {
        let events = sb.events(n, &f.name, &since, &until);
        assert!(events.is_empty(), "{n}: {events:?}");
    }

    // A new secret value replaces api only; the plan names the secret.
    let before: BTreeMap<&str, (String, String)> = ["api", "web", "plain"]
        .into_iter()
        .map(|s| (s, replica(&f, s)))
        .collect();
    std::fs::write(f.path().join("secrets/db-password"), format!("{db2}\n")).unwrap();
    let (code, out) = run(&["plan", &dir]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("secret db-password changed"), "{out}");
    let (code, out) = run(&["apply", &dir]);
    assert_eq!(code, 0, "{out}");
    assert_ne!(replica(&f, "api"), before["api"]);
    assert_eq!(replica(&f, "web"), before["web"]);
    assert_eq!(replica(&f, "plain"), before["plain"]);
    let (n1, api) = replica(&f, "api");
    assert_eq!(exec(&sb, &n1, &api, "printf %s \"$DB_PASSWORD\""), db2);

    // A new config replaces web only.
    let before_api = replica(&f, "api");
    std::fs::write(f.path().join("conf/site.conf"), "site v2\n").unwrap();
    let (code, out) = run(&["apply", &dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("config ./conf/site.conf changed"), "{out}");
    assert_eq!(replica(&f, "api"), before_api);
    assert_eq!(replica(&f, "plain"), before["plain"]);
    let (n2, web) = replica(&f, "web");
    assert_eq!(
        exec(&sb, &n2, &web, "wget -qO- http://127.0.0.1:8080/site.conf"),
        "site v2"
    );

    // Everything that shows the fleet shows names, never values.
    for args in [
        vec!["describe", "service", "api", &dir],
        vec!["get", "services", &dir, "-o", "json"],
        vec!["get", "services", &dir, "-o", "yaml"],
        vec!["plan", &dir, "-o", "json"],
    ] {
        let (_, out) = run(&args);
        assert!(!out.is_empty(), "{args:?}");
    }

    // The controller: verbose log, API answers; SIGHUP reads the secrets again.
    let log_run = {
        let mut cmd = f.cmd(&["-vvv", "run", &dir]);
        cmd.env("E2E_SECRETS_API_KEY", &key);
        let n = std::fs::read_dir(f.path()).unwrap().count();
        let log = f.path().join(format!("run-{n}.log"));
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Run {
            child: Some(child),
            log,
            port: PORT,
            token_file: f.path().join(format!("{}.api-token", f.name)),
        }
    };
    wait_for(Duration::from_secs(30), "the controller's API", || {
        (log_run.get("/healthz", false).0 == 200).then_some(())
    });
    let mut answers = String::new();
    for path in ["/v1/nodes", "/v1/plugs", "/metrics"] {
        let (status, body) = log_run.get(path, true);
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body);
    }
    let before_api = replica(&f, "api");
    std::fs::write(f.path().join("secrets/db-password"), format!("{db1}\n")).unwrap();
    signal(log_run.child.as_ref().unwrap().id(), "-HUP");
    wait_for(Duration::from_secs(60), "api replaced after SIGHUP", || {
        let now = replica(&f, "api");
        (now != before_api && f.sb.inspect(&now.0, &now.1, "{{.State.Status}}") == "running")
            .then_some(())
    });
    let (n1, api) = replica(&f, "api");
    assert_eq!(exec(&sb, &n1, &api, "printf %s \"$DB_PASSWORD\""), db1);
    let log = log_run.log_text();
    drop(log_run);

    // At the default level, no library speaks (the cap on bollard and russh only lowers).
    assert!(
        !shown.contains(" DEBUG ") && !shown.contains(" TRACE "),
        "{shown}"
    );
    for value in [&db1, &db2, &key] {
        for (what, text) in [
            ("output", &shown),
            ("controller log", &log),
            ("API", &answers),
        ] {
            assert!(
                !text.contains(value.as_str()),
                "a secret value in the {what}"
            );
        }
        let state = std::fs::read(f.state()).unwrap();
        assert!(
            !state.windows(value.len()).any(|w| w == value.as_bytes()),
            "a secret value in the state store"
        );
        let in_state_dir = common::files_containing(f.path(), value);
        assert!(
            in_state_dir
                .iter()
                .all(|p| p.contains("/secrets/db-password")),
            "a secret value in {in_state_dir:?}"
        );
    }
}
