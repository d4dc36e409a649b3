//! `fleetctl capacity`.

use std::path::Path;

use super::{GlobalOpts, Output};

/// Prints the capacity report.
pub fn run(_path: Option<&Path>, _output: Output, _global: &GlobalOpts) -> anyhow::Result<u8> {
    super::not_implemented("capacity")
}
