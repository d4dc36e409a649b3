//! The only place fleetctl calls a YAML library: text → a tree of [`YNode`]s, each with the
//! line and column it came from, under explicit input limits.
//!
//! Typed decoding happens afterwards on this tree (see `raw`), so that decoding can go on past
//! the first bad field and report every error.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::Diagnostic;

/// Most bytes one manifest file may have. Fleet manifests for 50 nodes are tens of KiB; a bigger
/// file is a mistake (or an attack), and refusing it early keeps `validate` fast.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Deepest nesting accepted. Manifests nest about six levels; this stops stack-exhaustion input.
pub const MAX_DEPTH: usize = 32;
/// Most aliases (`*name`) per file; manifests rarely need any, and this bounds alias bombs.
pub const MAX_ALIASES: usize = 256;
/// Most YAML nodes per file.
pub const MAX_NODES: usize = 100_000;
/// Most documents per file.
pub const MAX_DOCUMENTS: usize = 1_000;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column (characters), from 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct YNode {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
    /// Source text of a plain (unquoted) scalar that resolved to a non-string, e.g. `true`, `1`,
    /// `0.50`: lets string-typed fields take it verbatim.
    pub text: Option<String>,
}

/// The value of a [`YNode`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or empty.
    Null,
    /// `true` / `false` (YAML 1.2 spellings only).
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<YNode>),
    /// A mapping, in source order.
    Map(Vec<(YNode, YNode)>),
}

impl Value {
    /// "a string", "a mapping", ...: for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl YNode {
    /// The scalar as text, if it is a scalar (strings verbatim, other scalars as written).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                Some(self.text.clone().unwrap_or_else(|| match &self.value {
                    Value::Bool(b) => b.to_string(),
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                    _ => unreachable!("matched above"),
                }))
            }
            _ => None,
        }
    }
}

/// What serde hands us: the tree with saphyr's spans, before conversion.
enum SNode {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<SNode>>),
    Map(Vec<(Spanned<SNode>, Spanned<SNode>)>),
}

impl<'de> Deserialize<'de> for SNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<SNode, E> {
                Ok(SNode::Null)
            }
            fn visit_none<E>(self) -> Result<SNode, E> {
                Ok(SNode::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<SNode, D::Error> {
                SNode::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<SNode, E> {
                Ok(SNode::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<SNode, E> {
                Ok(SNode::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<SNode, E> {
                Ok(SNode::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<SNode, E> {
                Ok(SNode::Int(v))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<SNode, E> {
                i128::try_from(v)
                    .map(SNode::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<SNode, E> {
                Ok(SNode::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<SNode, E> {
                Ok(SNode::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<SNode, E> {
                Ok(SNode::Str(v))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SNode, E> {
                String::from_utf8(v.to_vec())
                    .map(SNode::Str)
                    .map_err(|_| E::custom("binary data is not allowed in manifests"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<SNode, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element::<Spanned<SNode>>()? {
                    items.push(x);
                }
                Ok(SNode::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<SNode, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = a.next_key::<Spanned<SNode>>()? {
                    let v = a.next_value::<Spanned<SNode>>()?;
                    entries.push((k, v));
                }
                Ok(SNode::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

fn convert(node: Spanned<SNode>, text: &str) -> YNode {
    let loc = node.referenced;
    let pos = Pos {
        line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
        col: u32::try_from(loc.column()).unwrap_or(u32::MAX),
    };
    let source = || {
        let span = loc.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        text.get(start..start.checked_add(len)?)
            .map(|s| s.trim().to_string())
    };
    let (value, raw) = match node.value {
        SNode::Null => (Value::Null, None),
        SNode::Bool(b) => (Value::Bool(b), source()),
        SNode::Int(i) => (Value::Int(i), source()),
        SNode::Float(f) => (Value::Float(f), source()),
        SNode::Str(s) => (Value::Str(s), None),
        SNode::Seq(items) => (
            Value::Seq(items.into_iter().map(|n| convert(n, text)).collect()),
            None,
        ),
        SNode::Map(entries) => (
            Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (convert(k, text), convert(v, text)))
                    .collect(),
            ),
            None,
        ),
    };
    YNode {
        pos,
        value,
        text: raw,
    }
}

/// Parses every document of one file. Empty documents are skipped.
///
/// # Errors
/// One diagnostic, at the place the YAML stopped making sense: syntax errors, duplicate keys,
/// input-limit breaches, invalid UTF-8 or oversize files. A file that fails here contributes no
/// documents.
pub fn parse_documents(file: &str, bytes: &[u8]) -> Result<Vec<YNode>, Diagnostic> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::new(
            file,
            Pos { line: 1, col: 1 },
            "",
            format!(
                "file is {} bytes; manifests are limited to {} bytes (1 MiB)",
                bytes.len(),
                MAX_FILE_BYTES
            ),
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            // `good` is valid UTF-8 by construction.
            let good = std::str::from_utf8(good).unwrap_or_default();
            let line = good.matches('\n').count() + 1;
            let col = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(Diagnostic::new(
                file,
                Pos {
                    line: line as u32,
                    col: col as u32,
                },
                "",
                format!(
                    "file is not valid UTF-8 (byte 0x{:02x} at offset {})",
                    bytes[e.valid_up_to()],
                    e.valid_up_to()
                ),
            ));
        }
    };
    if let Some(offset) = text.find('\0') {
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        return Err(Diagnostic::new(
            file,
            Pos {
                line: line as u32,
                col: col as u32,
            },
            "",
            "file contains a NUL byte; manifests are text",
        ));
    }
    parse_text(file, text, 1)
}

/// Parses the documents of `text` with the size limits divided by `share` (when a file is
/// parsed in `share` pieces, the pieces together stay within the file's limits).
fn parse_text(file: &str, text: &str, share: usize) -> Result<Vec<YNode>, Diagnostic> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_nodes = MAX_NODES / share;
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_events = MAX_NODES * 4 / share;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES * 2;
    budget.max_recorded_anchor_bytes = MAX_FILE_BYTES;
    budget.max_recorded_anchor_events = MAX_NODES / 10 / share;
    budget.flow_nesting_limit = MAX_DEPTH;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        strict_booleans: true,
        with_snippet: false,
    };
    let docs: Vec<Spanned<SNode>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: u32::try_from(l.line()).unwrap_or(u32::MAX).max(1),
                    col: u32::try_from(l.column()).unwrap_or(u32::MAX).max(1),
                })
                .unwrap_or(Pos { line: 1, col: 1 });
            let message = clean_message(&e.to_string());
            // An unclosed `{` or `[` is noticed where the next thing does not fit, often lines
            // later; the fix belongs where the bracket opened, so that is the place reported.
            if !message.starts_with("invalid YAML: duplicate key")
                && let Some((open, at)) = unclosed_bracket(text, pos)
                && at.line < pos.line
            {
                return Diagnostic::new(
                    file,
                    at,
                    "",
                    format!(
                        "invalid YAML: this `{open}` is not closed (the parser stopped at {pos}: {})",
                        message.trim_start_matches("invalid YAML: ")
                    ),
                );
            }
            Diagnostic::new(file, pos, "", message)
        })?;
    Ok(docs
        .into_iter()
        .map(|d| convert(d, text))
        .filter(|d| d.value != Value::Null)
        .collect())
}

/// Parses every document of one file, going on past a syntax error: when the file as a whole
/// does not parse, each document (split at its `---` line) is parsed on its own, so the other
/// documents are still read and checked and every broken one is reported. Returns the documents
/// read and the diagnostics.
pub fn parse_file(file: &str, bytes: &[u8]) -> (Vec<YNode>, Vec<Diagnostic>) {
    let whole = match parse_documents(file, bytes) {
        Ok(docs) => return (docs, Vec::new()),
        Err(d) => d,
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if whole.message.starts_with("invalid YAML:") => t,
        _ => return (Vec::new(), vec![whole]),
    };
    let pieces = split_documents(text);
    if pieces.len() < 2 || pieces.len() > MAX_SPLIT_DOCUMENTS {
        return (Vec::new(), vec![whole]);
    }
    let mut docs = Vec::new();
    let mut diags = Vec::new();
    for (first_line, piece) in &pieces {
        match parse_text(file, piece, pieces.len()) {
            Ok(found) => docs.extend(found.into_iter().map(|mut d| {
                shift(&mut d, first_line - 1);
                d
            })),
            Err(mut d) => {
                d.line += first_line - 1;
                d.message = shift_message(&d.message, first_line - 1);
                diags.push(d);
            }
        }
    }
    if diags.is_empty() {
        // The pieces parse where the whole does not (a directive, a marker inside a scalar):
        // the whole file's error stands.
        return (Vec::new(), vec![whole]);
    }
    (docs, diags)
}

/// Most documents a file is split into to read past a syntax error.
const MAX_SPLIT_DOCUMENTS: usize = 100;

/// The documents of `text` as (first line, text), split before each line that starts a document
/// (`---` alone or followed by white space).
fn split_documents(text: &str) -> Vec<(u32, &str)> {
    let mut pieces = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u32;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
        if marker && offset > start {
            pieces.push((start_line, &text[start..offset]));
            start = offset;
            start_line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        }
        offset += line.len();
    }
    if offset > start {
        pieces.push((start_line, &text[start..offset]));
    }
    pieces
}

/// Moves a parsed tree `by` lines down (a document parsed on its own).
fn shift(node: &mut YNode, by: u32) {
    node.pos.line += by;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| shift(n, by)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift(k, by);
            shift(v, by);
        }),
        _ => {}
    }
}

/// Moves the `parser stopped at L:C` position inside an unclosed-bracket message `by` lines.
fn shift_message(message: &str, by: u32) -> String {
    let Some(i) = message.find("stopped at ") else {
        return message.to_string();
    };
    let rest = &message[i + "stopped at ".len()..];
    let Some((line, tail)) = rest.split_once(':') else {
        return message.to_string();
    };
    match line.parse::<u32>() {
        Ok(l) => format!("{}stopped at {}:{tail}", &message[..i], l + by),
        Err(_) => message.to_string(),
    }
}

/// The innermost bracket (`{` or `[`) still open at `stop`, scanning from the start of
/// the text: brackets inside quotes and comments are skipped; one counts as a flow indicator
/// when it starts a token (after white space, a line start, `[`, `{` or `,`). A heuristic for
/// locating a syntax error, never for parsing.
fn unclosed_bracket(text: &str, stop: Pos) -> Option<(char, Pos)> {
    let mut stack: Vec<(char, Pos)> = Vec::new();
    let (mut line, mut col) = (1u32, 0u32);
    let mut prev = '\n';
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            col = 0;
            comment = false;
            prev = c;
            continue;
        }
        col += 1;
        if (line, col) >= (stop.line, stop.col) {
            break;
        }
        if comment {
            continue;
        }
        if let Some(q) = quote {
            if q == '"' && c == '\\' && !escaped {
                escaped = true;
                continue;
            }
            if c == q && !escaped {
                if q == '\'' && chars.peek() == Some(&'\'') {
                    // `''` is a quote inside a single-quoted string.
                    chars.next();
                    col += 1;
                    continue;
                }
                quote = None;
            }
            escaped = false;
            prev = c;
            continue;
        }
        let token_start = prev.is_whitespace() || matches!(prev, '[' | '{' | ',');
        match c {
            '#' if prev.is_whitespace() => comment = true,
            '"' | '\'' if token_start => quote = Some(c),
            '{' | '[' if token_start => stack.push((c, Pos { line, col })),
            '}' | ']' => {
                let want = if c == '}' { '{' } else { '[' };
                if stack.last().is_some_and(|(o, _)| *o == want) {
                    stack.pop();
                }
            }
            _ => {}
        }
        prev = c;
    }
    stack.pop()
}

/// serde-saphyr messages sometimes end with their own location; ours is already in front.
/// Input-limit breaches are reworded to say which limit and why it exists.
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    if first.contains("recursion limit") || first.contains("Depth {") {
        return format!("input limit: nesting deeper than {MAX_DEPTH} levels");
    }
    if first.contains("budget breached") {
        let what = if first.contains("Alias") || first.contains("Anchor") {
            format!(
                "too many aliases or alias expansions (at most {MAX_ALIASES}); alias bombs are refused"
            )
        } else if first.contains("Documents") {
            format!("more than {MAX_DOCUMENTS} documents in one file")
        } else if first.contains("Nodes") || first.contains("Events") {
            format!("more than {MAX_NODES} YAML values in one file")
        } else {
            "the file is too large or complex to be a manifest".to_string()
        };
        return format!("input limit: {what}");
    }
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    if let Some(rest) = first.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("invalid YAML: duplicate key {key:?}: a key may appear once per mapping");
    }
    format!("invalid YAML: {first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn the_innermost_bracket_open_at_the_stop_is_found() {
        let text = "a: {b: [1, 2], c: [3\nd: 4\n";
        assert_eq!(unclosed_bracket(text, at(2, 2)), Some(('[', at(1, 19))));
        // Closed before the stop: nothing.
        assert_eq!(unclosed_bracket("a: [1]\nb: {c: d}\n", at(3, 1)), None);
    }

    #[test]
    fn brackets_in_quotes_comments_and_plain_words_do_not_count() {
        let text = "a: \"{[\" # {\nb: 'it''s ['\nc: x{y\nd: [1\n";
        assert_eq!(unclosed_bracket(text, at(5, 1)), Some(('[', at(4, 4))));
    }

    #[test]
    fn an_unclosed_bracket_is_reported_where_it_opened() {
        let text = "apiVersion: fleet/v1\nkind: Node\nmetadata: {name: node1\nspec: {}\n";
        let d = parse_documents("n.yaml", text.as_bytes()).unwrap_err();
        assert_eq!((d.line, d.column), (3, 11), "{d}");
        assert!(d.message.contains("this `{` is not closed"), "{d}");
    }

    #[test]
    fn documents_split_at_their_marker_lines_only() {
        let text = "a: 1\n--- # second\nb: '---'\n---\n---x: 2\n";
        let pieces = split_documents(text);
        let firsts: Vec<u32> = pieces.iter().map(|(l, _)| *l).collect();
        assert_eq!(firsts, [1, 2, 4]);
        assert_eq!(pieces[2].1, "---\n---x: 2\n");
    }

    #[test]
    fn a_broken_document_does_not_hide_the_others() {
        let text = "a: 1\n---\nb: [2\nc: 3\n---\nd: {e: 4}\n";
        let (docs, diags) = parse_file("f.yaml", text.as_bytes());
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].line, diags[0].column), (3, 4), "{}", diags[0]);
        assert!(diags[0].message.contains("stopped at 4:"), "{}", diags[0]);
        assert_eq!(docs.len(), 2);
        // Positions are the file's, not the document's.
        let Value::Map(m) = &docs[1].value else {
            panic!("a mapping")
        };
        assert_eq!(m[0].0.pos, at(6, 1));
        let Value::Map(inner) = &m[0].1.value else {
            panic!("a mapping")
        };
        assert_eq!(inner[0].1.pos, at(6, 8));
    }
}
