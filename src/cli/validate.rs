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
                "{}: valid (fleet {:?}: {} nodes, {} services, {} plug classes, {} placement policies)\n",
                path.display(),
                f.fleet.name,
                f.nodes.len(),
                f.services.len(),
                f.plug_classes.len(),
                f.policies.len()
            ))?;
            Ok(0)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(1)
        }
    }
}
