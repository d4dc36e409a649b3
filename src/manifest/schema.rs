//! The JSON Schema of the manifest kinds, generated from the raw types, for editors
//! (yaml-language-server) and `fleetctl schema`.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::quantity::{Bytes, MilliCpus, Percent};
use super::raw::{
    API_VERSION, Kind, RawFleetSpec, RawMetadata, RawNodeSpec, RawPlugClassSpec, RawPolicySpec,
    RawSecretSpec, RawServiceSpec,
};

impl JsonSchema for Bytes {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: 256MiB, 1GiB, 512Mi, 1Gi (binary), 100GB, 500M (decimal), 512m, 1g (Docker, binary) or a byte count.",
            "anyOf": [
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?\\s*(B|b|Ki|KiB|k|kb|Mi|MiB|m|mb|Gi|GiB|g|gb|Ti|TiB|t|tb|K|KB|kB|M|MB|G|GB|T|TB)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

impl JsonSchema for MilliCpus {
    fn schema_name() -> Cow<'static, str> {
        "Cpus".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "CPUs: 0.5, 2 or 500m.",
            "anyOf": [
                {"type": "string", "pattern": "^([0-9]+m|[0-9]*\\.?[0-9]+)$"},
                {"type": "number", "exclusiveMinimum": 0}
            ]
        })
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A percentage such as 85%.",
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?%$"
        })
    }
}

fn document(
    generator: &mut SchemaGenerator,
    kind: Kind,
    spec: Schema,
    spec_required: bool,
) -> Schema {
    let metadata = generator.subschema_for::<RawMetadata>();
    let mut required = vec!["apiVersion", "kind", "metadata"];
    if spec_required {
        required.push("spec");
    }
    json_schema!({
        "type": "object",
        "title": kind.as_str(),
        "additionalProperties": false,
        "required": required,
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind.as_str()},
            "metadata": metadata,
            "spec": spec
        }
    })
}

/// The schema of one manifest document (any kind).
pub fn json_schema() -> Schema {
    let mut generator = SchemaGenerator::default();
    let fleet = generator.subschema_for::<RawFleetSpec>();
    let node = generator.subschema_for::<RawNodeSpec>();
    let service = generator.subschema_for::<RawServiceSpec>();
    let class = generator.subschema_for::<RawPlugClassSpec>();
    let policy = generator.subschema_for::<RawPolicySpec>();
    let secret = generator.subschema_for::<RawSecretSpec>();
    let one_of = vec![
        document(&mut generator, Kind::Fleet, fleet, false),
        document(&mut generator, Kind::Node, node, false),
        document(&mut generator, Kind::Service, service, true),
        document(&mut generator, Kind::PlugClass, class, true),
        document(&mut generator, Kind::PlacementPolicy, policy, false),
        document(&mut generator, Kind::Secret, secret, true),
    ];
    let mut root = json_schema!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fleetctl.dev/schema/fleet-v1.json",
        "title": "fleetctl manifest (fleet/v1)",
        "description": "One document of a fleetctl manifest: Fleet, Node, Service, PlugClass, PlacementPolicy or Secret.",
        "oneOf": one_of
    });
    let defs = generator.take_definitions(true);
    if !defs.is_empty() {
        root.insert("$defs".into(), serde_json::Value::Object(defs));
    }
    root
}

/// The schema as pretty-printed JSON, exactly as committed under `manifests/`.
pub fn json_schema_text() -> String {
    serde_json::to_string_pretty(&json_schema()).expect("schema serializes")
}
