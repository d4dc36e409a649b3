//! The manifest parser never panics and never hangs, whatever it is given: arbitrary bytes,
//! YAML-shaped noise, and mutations of a valid manifest. It answers with a fleet or with
//! diagnostics that carry a file, a line and a column.

use fleetctl::manifest::{Source, parse, yaml};
use proptest::prelude::*;

const VALID: &str = "apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {capacity: {cpus: 4, memory: 8GiB}, reserved: {memory: 1GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  replicas: 2
  resources: {memory: 256MiB, cpus: 0.5}
  ports: ['80:8080']
  healthcheck: {command: [CMD, 'true'], interval: 5s}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: p:1, resources: {memory: 512MiB}, port: 8080, hostPorts: 51000-51999}
";

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    // Read past a syntax error: every diagnostic is located, whatever was read.
    let (_, broken) = yaml::parse_file("p.yaml", bytes);
    for d in &broken {
        prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
    }
    match yaml::parse_documents("p.yaml", bytes) {
        Err(d) => prop_assert!(d.line >= 1 && d.column >= 1, "{d}"),
        Ok(_) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            if let Err(e) = parse(&[Source {
                name: "p.yaml".into(),
                text,
            }]) {
                prop_assert!(!e.diagnostics.is_empty());
                for d in &e.diagnostics {
                    prop_assert!(d.line >= 1 && d.column >= 1 && d.file == "p.yaml", "{d}");
                }
            }
        }
    }
    Ok(())
}

fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("apiVersion: fleet/v1\n".to_string()),
        Just("kind: Service\n".to_string()),
        Just("---\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just("&a ".to_string()),
        Just("*a\n".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(": ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("!!binary ".to_string()),
        Just("<<: *a\n".to_string()),
        Just("\t".to_string()),
        Just("#".to_string()),
        "[a-zA-Z0-9%._-]{0,12}",
        Just("\n".to_string()),
    ];
    prop::collection::vec(token, 0..200).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check(&bytes)?;
    }

    #[test]
    fn yaml_shaped_noise_never_panics(text in yamlish()) {
        check(text.as_bytes())?;
    }

    #[test]
    fn mutations_of_a_valid_manifest_never_panic(
        edits in prop::collection::vec((0usize..VALID.len(), any::<u8>(), 0u8..3), 1..12),
    ) {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte, how) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match how {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => { bytes.remove(at); }
            }
        }
        check(&bytes)?;
    }
}
