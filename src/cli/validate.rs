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
            // Said only when there are any, so outputs without secrets stay as they were.
            let secrets = match f.secrets.len() {
                0 => String::new(),
                n => format!(", {}", count(n, "secret", "secrets")),
            };
            super::common::emit(&format!(
                "{}: valid (fleet {:?}: {}, {}, {}, {}{secrets})\n",
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
