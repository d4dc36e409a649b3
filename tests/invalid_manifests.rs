//! The table of invalid manifests: every `tests/invalid/NAME.yaml` fails `fleetctl validate`
//! with exit 1 and exactly the diagnostics in `NAME.expected` (file, line, column, field path,
//! message — every error, in order). To accept a deliberate change of wording, regenerate with
//! `for f in tests/invalid/*.yaml; do fleetctl validate $f 2> ${f%.yaml}.expected; done` and
//! review the diff.

use std::path::Path;

#[test]
fn every_invalid_manifest_reports_exactly_its_expected_diagnostics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cases = 0;
    let mut entries: Vec<_> = std::fs::read_dir(root.join("tests/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap();
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", rel.display()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
            .current_dir(root)
            .args(["validate", rel.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: must exit 1", rel.display());
        assert!(
            out.stdout.is_empty(),
            "{}: nothing on stdout",
            rel.display()
        );
        let got = String::from_utf8_lossy(&out.stderr);
        assert_eq!(got, expected, "{}: diagnostics differ", rel.display());
        cases += 1;
    }
    assert!(cases >= 14, "only {cases} cases");
}
