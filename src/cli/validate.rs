//! `fleetctl validate PATH`.

use std::path::Path;

/// Prints every diagnostic; exit 0 when valid, 1 when not.
pub fn run(path: &Path) -> anyhow::Result<u8> {
    match crate::manifest::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            let f = &loaded.fleet;
            super::common::emit(&format!(
                "{}: valid (fleet {:?}: {}, {}, {}, {})\n",
                path.display(),
                f.fleet.name,
                count(f.nodes.len(), "node", "nodes"),
                count(f.services.len(), "service", "services"),
                count(f.plug_classes.len(), "plug class", "plug classes"),
                count(f.policies.len(), "placement policy", "placement policies"),
            ))?;
            Ok(0)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(1)
        }
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
