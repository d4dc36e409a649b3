//! Container logs as the transport hands them out: whole lines, each with the engine's
//! timestamp and its stream ([`LogLine`]), whatever framing the engine used.
//!
//! The engine answers `GET /containers/{id}/logs?timestamps=1` in one of two shapes:
//! - **multiplexed** (a container without a TTY): frames of `[stream, 0, 0, 0, len]` + payload,
//!   one frame per log entry, each entry `TIMESTAMP TEXT`. An entry longer than the logging
//!   driver's buffer (16 KiB for json-file) is split into several entries, each with its own
//!   timestamp, only the last ending in `\n`: [`LineAssembler`] joins them into one line, at the
//!   first part's time.
//! - **raw** (a container with a TTY): the bytes as written, with `TIMESTAMP ` at the start of
//!   each entry, in chunks cut anywhere: [`LineAssembler`] buffers up to each `\n`.
//!
//! Pure: unit-tested without an engine; [`super::docker`] feeds it, the fake builds
//! [`LogLine`]s directly.

use futures_util::stream::BoxStream;

use super::TransportError;

/// Which of the container's streams a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output (everything, under a TTY).
    Stdout,
    /// Standard error (never under a TTY).
    Stderr,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the engine received it, in nanoseconds since the Unix epoch (the node's clock).
    pub time_ns: i64,
    /// Which stream.
    pub stream: LogStream,
    /// The text, without its line end (`\n`, or `\r\n` under a TTY); invalid UTF-8 replaced.
    pub text: String,
}

/// What [`super::NodeRuntime::logs`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Keep the stream open for new lines until the container stops.
    pub follow: bool,
    /// Only lines at or after this time (ns since the epoch).
    pub since_ns: Option<i64>,
    /// Only the last N lines (before following).
    pub tail: Option<u64>,
}

/// A container's log lines, oldest first.
pub type LogLines = BoxStream<'static, Result<LogLine, TransportError>>;

/// One piece of the engine's answer, as the HTTP client decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// One multiplexed frame: a whole log entry of one stream.
    Frame(LogStream, Vec<u8>),
    /// Bytes of a TTY container's log, cut anywhere.
    Raw(Vec<u8>),
}

/// Turns [`Chunk`]s into [`LogLine`]s; see the module docs for the two shapes.
#[derive(Debug, Default)]
pub struct LineAssembler {
    /// A multiplexed entry split by the logging driver, by stream: its first part's time and
    /// the text so far.
    partial: [Option<(i64, Vec<u8>)>; 2],
    /// A TTY log's bytes after the last `\n`.
    raw: Vec<u8>,
    /// The last timestamp read: the time of a line whose own cannot be read.
    last_time: i64,
}

fn slot(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

fn text_of(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

impl LineAssembler {
    /// A fresh assembler (one per log stream read).
    pub fn new() -> Self {
        Self::default()
    }

    /// Splits `entry` (`TIMESTAMP TEXT`) into its time and text; an entry without a readable
    /// timestamp is all text, at the last time read.
    fn stamp<'a>(&mut self, entry: &'a [u8]) -> (i64, &'a [u8]) {
        if let Some(space) = entry.iter().position(|b| *b == b' ')
            && let Some(t) = std::str::from_utf8(&entry[..space])
                .ok()
                .and_then(parse_rfc3339_ns)
        {
            self.last_time = t;
            return (t, &entry[space + 1..]);
        }
        (self.last_time, entry)
    }

    /// The lines `chunk` completes.
    pub fn push(&mut self, chunk: Chunk) -> Vec<LogLine> {
        let mut out = Vec::new();
        match chunk {
            Chunk::Frame(stream, entry) => {
                let (time, rest) = self.stamp(&entry);
                let (time, mut text) = match self.partial[slot(stream)].take() {
                    Some((t, mut so_far)) => {
                        so_far.extend_from_slice(rest);
                        (t, so_far)
                    }
                    None => (time, rest.to_vec()),
                };
                // An entry holds one line; should one hold several, each is a line at its time.
                while let Some(nl) = text.iter().position(|b| *b == b'\n') {
                    let tail = text.split_off(nl + 1);
                    out.push(LogLine {
                        time_ns: time,
                        stream,
                        text: text_of(&text),
                    });
                    text = tail;
                }
                if !text.is_empty() {
                    self.partial[slot(stream)] = Some((time, text));
                }
            }
            Chunk::Raw(bytes) => {
                self.raw.extend_from_slice(&bytes);
                while let Some(nl) = self.raw.iter().position(|b| *b == b'\n') {
                    let rest = self.raw.split_off(nl + 1);
                    let line = std::mem::replace(&mut self.raw, rest);
                    let (time, text) = self.stamp(&line);
                    out.push(LogLine {
                        time_ns: time,
                        stream: LogStream::Stdout,
                        text: text_of(text),
                    });
                }
            }
        }
        out
    }

    /// What is left when the stream ends: a last line without its `\n`.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            if let Some((time, text)) = self.partial[slot(stream)].take() {
                out.push(LogLine {
                    time_ns: time,
                    stream,
                    text: text_of(&text),
                });
            }
        }
        if !self.raw.is_empty() {
            let line = std::mem::take(&mut self.raw);
            let (time, text) = self.stamp(&line);
            out.push(LogLine {
                time_ns: time,
                stream: LogStream::Stdout,
                text: text_of(text),
            });
        }
        out.sort_by_key(|l| l.time_ns);
        out
    }
}

/// Days from 1970-01-01 to the civil date `y-m-d` (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of an RFC 3339 time as the engine writes it
/// (`2026-12-04T20:31:00.123456789Z`; any fraction up to 9 digits, `Z` or `±HH:MM`).
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac = frac * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9);
        if digits == 0 {
            return None;
        }
        frac *= 10_i64.pow(u32::try_from(9 - digits).ok()?);
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let oh: i64 = tz[1..3].parse().ok()?;
            let om: i64 = tz[4..6].parse().ok()?;
            let sign = if &tz[..1] == "-" { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

/// `time_ns` as RFC 3339 in UTC with nanoseconds (`2026-12-04T20:31:00.123456789Z`).
pub fn format_rfc3339_ns(time_ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(time_ns.max(0).unsigned_abs());
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-12-04T20:31:00.000000001Z";
    const T1: &str = "2026-12-04T20:31:00.5Z";

    fn frame(stream: LogStream, s: &str) -> Chunk {
        Chunk::Frame(stream, s.as_bytes().to_vec())
    }

    #[test]
    fn timestamps_parse_and_format_round_trip() {
        let t = parse_rfc3339_ns(T0).unwrap();
        assert_eq!(format_rfc3339_ns(t), T0);
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T01:00:00.25+01:00"),
            Some(250_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns(T1).unwrap() - t,
            500_000_000 - 1,
            "fractions shorter than 9 digits"
        );
        assert_eq!(
            parse_rfc3339_ns("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        for bad in [
            "",
            "hello world",
            "2026-13-01T00:00:00Z",
            "2026-12-04T20:31:00",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn multiplexed_entries_are_lines_and_split_entries_are_joined() {
        let mut a = LineAssembler::new();
        let out = a.push(frame(LogStream::Stdout, &format!("{T0} hello\n")));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "hello");
        assert_eq!(out[0].time_ns, parse_rfc3339_ns(T0).unwrap());
        // A long line split by the logging driver: two entries, one line, the first's time.
        assert!(
            a.push(frame(LogStream::Stderr, &format!("{T0} part one,")))
                .is_empty()
        );
        let out = a.push(frame(LogStream::Stdout, &format!("{T1} other\n")));
        assert_eq!(out[0].text, "other");
        let out = a.push(frame(LogStream::Stderr, &format!("{T1} part two\n")));
        assert_eq!(
            out,
            vec![LogLine {
                time_ns: parse_rfc3339_ns(T0).unwrap(),
                stream: LogStream::Stderr,
                text: "part one,part two".into()
            }]
        );
        // The last entry without its newline comes out at the end.
        assert!(
            a.push(frame(LogStream::Stdout, &format!("{T1} last")))
                .is_empty()
        );
        let out = a.finish();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "last");
    }

    #[test]
    fn tty_bytes_cut_anywhere_become_lines_without_their_crlf() {
        let text = format!("{T0} one\r\n{T1} two\r\n{T1} three");
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let mut a = LineAssembler::new();
            let mut out = a.push(Chunk::Raw(bytes[..cut].to_vec()));
            out.extend(a.push(Chunk::Raw(bytes[cut..].to_vec())));
            out.extend(a.finish());
            let texts: Vec<&str> = out.iter().map(|l| l.text.as_str()).collect();
            assert_eq!(texts, ["one", "two", "three"], "cut at {cut}");
            assert!(out.iter().all(|l| l.stream == LogStream::Stdout));
            assert_eq!(out[2].time_ns, parse_rfc3339_ns(T1).unwrap());
        }
    }

    #[test]
    fn an_entry_without_a_timestamp_keeps_the_last_time() {
        let mut a = LineAssembler::new();
        a.push(frame(LogStream::Stdout, &format!("{T1} a\n")));
        let out = a.push(frame(LogStream::Stdout, "no-stamp here\n"));
        assert_eq!(out[0].text, "no-stamp here");
        assert_eq!(out[0].time_ns, parse_rfc3339_ns(T1).unwrap());
    }
}
