//! Typed decoding of a [`YNode`] tree that keeps going after an error: every wrong type,
//! unknown field and missing field is recorded with its position, and decoding continues with
//! the next field.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::Diagnostic;
use super::quantity::{Bytes, MilliCpus, Percent, parse_duration};
use super::yaml::{Pos, Value, YNode};

/// A decoded value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Its position in the file.
    pub pos: Pos,
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// Decoding context: the file being decoded and the diagnostics collected so far.
pub struct Cx<'a> {
    /// File name for diagnostics.
    pub file: &'a str,
    /// Collected diagnostics.
    pub diags: &'a mut Vec<Diagnostic>,
}

impl Cx<'_> {
    /// Records an error at `pos` for field `path`.
    pub fn err(&mut self, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(self.file, pos, path, msg));
    }

    /// Records a warning at `pos` for field `path`.
    pub fn warn(&mut self, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(self.file, pos, path, msg));
    }

    fn wrong_type(&mut self, node: &YNode, path: &str, expected: &str) {
        let mut msg = format!("expected {expected}, found {}", node.value.describe());
        // A command written as one string, as in a Dockerfile's shell form or compose: say how
        // to write it rather than guess how to split it.
        if path.ends_with(".command")
            && expected == "a list"
            && let Value::Str(text) = &node.value
        {
            let words: Vec<String> = text.split_whitespace().map(|w| format!("{w:?}")).collect();
            msg.push_str(&format!(
                "; write the arguments as a list, e.g. [{}], or [\"sh\", \"-c\", {text:?}] for a shell",
                words.join(", ")
            ));
        }
        self.err(node.pos, path, msg);
    }
}

/// Joins a field path: `spec` + `resources` → `spec.resources`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value that can be decoded from a node, reporting its own errors.
pub trait Decode: Sized {
    /// Decodes `node`; on failure records the error(s) and returns `None`.
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self>;
}

impl<T: Decode> Decode for Sp<T> {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        T::decode(node, path, cx).map(|value| Sp {
            value,
            pos: node.pos,
        })
    }
}

impl Decode for String {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                cx.wrong_type(node, path, "a string");
                None
            }
        }
    }
}

/// A string that may be written as any scalar (`tier: 1`, `DEBUG: true`), kept as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[schemars(transparent)]
pub struct Text(
    /// The text.
    #[schemars(with = "ScalarSchema")]
    pub String,
);

/// Schema of a scalar written as string, number or boolean.
#[derive(schemars::JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)] // only its schema is used
enum ScalarSchema {
    S(String),
    N(f64),
    B(bool),
}

impl Decode for Text {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match node.scalar_text() {
            Some(s) => Some(Text(s)),
            None => {
                cx.wrong_type(node, path, "a string");
                None
            }
        }
    }
}

impl Decode for bool {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                cx.wrong_type(node, path, "true or false");
                None
            }
        }
    }
}

macro_rules! decode_int {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
                match node.value {
                    Value::Int(i) => match <$t>::try_from(i) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            cx.err(node.pos, path, format!(
                                "{i} is out of range ({} to {})", <$t>::MIN, <$t>::MAX));
                            None
                        }
                    },
                    _ => {
                        cx.wrong_type(node, path, "a whole number");
                        None
                    }
                }
            }
        }
    )*};
}
decode_int!(u16, u32, u64);

/// A large optional section kept behind a pointer, so a spec that leaves it out stays small.
impl<T: Decode> Decode for Box<T> {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        T::decode(node, path, cx).map(Box::new)
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match T::decode(item, &format!("{path}[{i}]"), cx) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                cx.wrong_type(node, path, "a list");
                None
            }
        }
    }
}

impl<T: Decode> Decode for BTreeMap<Sp<String>, T> {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Map(entries) => {
                let mut out = BTreeMap::new();
                let mut ok = true;
                for (k, v) in entries {
                    let Some(key) = k.scalar_text() else {
                        cx.wrong_type(k, path, "a string key");
                        ok = false;
                        continue;
                    };
                    match T::decode(v, &join(path, &key), cx) {
                        Some(v) => {
                            out.insert(
                                Sp {
                                    value: key,
                                    pos: k.pos,
                                },
                                v,
                            );
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                cx.wrong_type(node, path, "a mapping");
                None
            }
        }
    }
}

impl<T: PartialOrd> PartialOrd for Sp<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.value.partial_cmp(&other.value)
    }
}
impl<T: Ord> Ord for Sp<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}
impl<T: Eq> Eq for Sp<T> {}

impl Decode for Bytes {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        let parsed = match &node.value {
            Value::Int(i) if *i >= 0 => u64::try_from(*i)
                .map(Bytes)
                .map_err(|_| "size too large".to_string()),
            Value::Str(s) => Bytes::parse(s),
            Value::Float(_) | Value::Int(_) => Err(format!(
                "invalid size {}: {}",
                node.scalar_text().unwrap_or_default(),
                super::quantity::MEMORY_FORMS
            )),
            _ => {
                cx.wrong_type(node, path, "a size such as 256MiB");
                return None;
            }
        };
        parsed.map_err(|m| cx.err(node.pos, path, m)).ok()
    }
}

impl Decode for MilliCpus {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        let text = match &node.value {
            Value::Int(_) | Value::Float(_) | Value::Str(_) => {
                node.scalar_text().unwrap_or_default()
            }
            _ => {
                cx.wrong_type(node, path, "a CPU amount such as 0.5 or 500m");
                return None;
            }
        };
        MilliCpus::parse(&text)
            .map_err(|m| cx.err(node.pos, path, m))
            .ok()
    }
}

impl Decode for Percent {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => Percent::parse(s)
                .map_err(|m| cx.err(node.pos, path, m))
                .ok(),
            Value::Int(_) | Value::Float(_) => {
                cx.err(
                    node.pos,
                    path,
                    format!(
                        "invalid percentage {}: write it with a % sign, like \"85%\"",
                        node.scalar_text().unwrap_or_default()
                    ),
                );
                None
            }
            _ => {
                cx.wrong_type(node, path, "a percentage such as 85%");
                None
            }
        }
    }
}

/// A humantime duration (`30s`, `5m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, schemars::JsonSchema)]
#[schemars(transparent)]
pub struct Dur(
    /// The duration.
    #[schemars(with = "DurationSchema")]
    pub Duration,
);

/// Schema of a duration.
#[derive(schemars::JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)] // only its schema is used
struct DurationSchema(
    #[schemars(regex(
        pattern = r"^(0|([0-9]+(\.[0-9]+)?\s*(ns|us|ms|s|sec|m|min|h|hr|d|w)\s*)+)$"
    ))]
    String,
);

impl Decode for Dur {
    fn decode(node: &YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => parse_duration(s)
                .map(Dur)
                .map_err(|m| cx.err(node.pos, path, m))
                .ok(),
            Value::Int(0) => Some(Dur(Duration::ZERO)),
            Value::Int(_) | Value::Float(_) => {
                cx.err(
                    node.pos,
                    path,
                    format!(
                        "invalid duration {}: give a unit, e.g. 30s, 5m, 1h30m",
                        node.scalar_text().unwrap_or_default()
                    ),
                );
                None
            }
            _ => {
                cx.wrong_type(node, path, "a duration such as 30s");
                None
            }
        }
    }
}

/// Reads the fields of one mapping: each field asked for is marked, and [`Fields::finish`]
/// reports every key nobody asked for as unknown (with a suggestion when one is close).
pub struct Fields<'n> {
    entries: &'n [(YNode, YNode)],
    keys: Vec<Option<String>>,
    used: Vec<bool>,
    asked: Vec<&'static str>,
    /// Position of the mapping.
    pub pos: Pos,
    /// Path of the mapping.
    pub path: String,
}

impl<'n> Fields<'n> {
    /// Starts reading `node` as a mapping; records an error and returns `None` otherwise.
    pub fn of(node: &'n YNode, path: &str, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                entries,
                keys: entries.iter().map(|(k, _)| k.scalar_text()).collect(),
                used: vec![false; entries.len()],
                asked: Vec::new(),
                pos: node.pos,
                path: path.to_string(),
            }),
            _ => {
                cx.wrong_type(node, path, "a mapping");
                None
            }
        }
    }

    /// The node of field `key`, if present.
    pub fn node(&mut self, key: &'static str) -> Option<&'n YNode> {
        self.asked.push(key);
        let i = self.keys.iter().position(|k| k.as_deref() == Some(key))?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// Whether field `key` is present with a value other than `null` (it is not marked as
    /// read).
    pub fn has(&self, key: &str) -> bool {
        self.keys
            .iter()
            .zip(self.entries)
            .any(|(k, (_, v))| k.as_deref() == Some(key) && v.value != Value::Null)
    }

    /// An optional field. A `null` value counts as absent.
    pub fn opt<T: Decode>(&mut self, key: &'static str, cx: &mut Cx) -> Option<T> {
        let node = self.node(key)?;
        if node.value == Value::Null {
            return None;
        }
        T::decode(node, &join(&self.path, key), cx)
    }

    /// A required field; records "missing required field" when absent.
    pub fn req<T: Decode>(&mut self, key: &'static str, cx: &mut Cx) -> Option<T> {
        match self.node(key) {
            Some(node) if node.value != Value::Null => T::decode(node, &join(&self.path, key), cx),
            Some(node) => {
                cx.err(
                    node.pos,
                    &join(&self.path, key),
                    "required field has no value",
                );
                None
            }
            None => {
                let where_ = if self.path.is_empty() {
                    "the document".to_string()
                } else {
                    format!("`{}`", self.path)
                };
                cx.err(
                    self.pos,
                    &join(&self.path, key),
                    format!("missing required field `{key}` in {where_}"),
                );
                None
            }
        }
    }

    /// Reports every key that was not asked for.
    pub fn finish(self, cx: &mut Cx) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let Some(name) = &self.keys[i] else {
                cx.wrong_type(k, &self.path, "a field name");
                continue;
            };
            let mut msg = format!("unknown field `{name}`");
            if let Some(best) = suggest(name, &self.asked) {
                msg.push_str(&format!("; did you mean `{best}`?"));
            } else if !self.asked.is_empty() {
                msg.push_str(&format!("; known fields: {}", self.asked.join(", ")));
            }
            cx.err(k.pos, &join(&self.path, name), msg);
        }
    }
}

/// The known name closest to `name`, when it is close enough to be a typo.
pub fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
