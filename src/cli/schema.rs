//! `fleetctl schema`.

/// Prints the JSON Schema.
pub fn run() -> anyhow::Result<u8> {
    super::common::emit(&format!(
        "{}\n",
        crate::manifest::schema::json_schema_text()
    ))?;
    Ok(0)
}
