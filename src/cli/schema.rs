//! `fleetctl schema`.

/// Prints the JSON Schema.
pub fn run() -> anyhow::Result<u8> {
    println!("{}", crate::manifest::schema::json_schema_text());
    Ok(0)
}
