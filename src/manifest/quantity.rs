//! Typed quantities: memory and disk sizes, CPUs, durations and percentages (SPEC §2), parsed
//! once and never kept as strings.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const KI: u64 = 1024;
const MI: u64 = KI * 1024;
const GI: u64 = MI * 1024;
const TI: u64 = GI * 1024;

/// Accepted spellings, for error messages.
pub const MEMORY_FORMS: &str = "use e.g. 256MiB, 1GiB, 512Mi, 1Gi (binary), 100GB, 500M (decimal), 512m, 1g (Docker, binary) or a byte count";

/// A size in bytes (memory or disk).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Parses `256MiB`, `1Gi`, `100GB`, `500M`, `512m`, `1g`, `1.5GiB` or a plain byte count.
    ///
    /// # Errors
    /// A message saying which spellings are accepted.
    pub fn parse(s: &str) -> Result<Bytes, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(format!("invalid size {s:?}: {MEMORY_FORMS}"));
        }
        let mult: u64 = match unit {
            "" | "B" | "b" => 1,
            "Ki" | "KiB" | "k" | "kb" => KI,
            "Mi" | "MiB" | "m" | "mb" => MI,
            "Gi" | "GiB" | "g" | "gb" => GI,
            "Ti" | "TiB" | "t" | "tb" => TI,
            "K" | "KB" | "kB" => 1_000,
            "M" | "MB" => 1_000_000,
            "G" | "GB" => 1_000_000_000,
            "T" | "TB" => 1_000_000_000_000,
            _ => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {unit:?}; {MEMORY_FORMS}"
                ));
            }
        };
        let bytes = if let Some((int, frac)) = num.split_once('.') {
            if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
                return Err(format!("invalid size {s:?}: {MEMORY_FORMS}"));
            }
            let int: u64 = if int.is_empty() {
                0
            } else {
                int.parse()
                    .map_err(|_| format!("invalid size {s:?}: number too large"))?
            };
            let digits = frac.len().min(9) as u32;
            let frac_val: u64 = frac[..digits as usize].parse().unwrap_or(0);
            let scale = 10u64.pow(digits);
            let whole = int.checked_mul(mult);
            let part = (u128::from(frac_val) * u128::from(mult) / u128::from(scale)) as u64;
            whole.and_then(|w| w.checked_add(part))
        } else {
            num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult))
        };
        bytes
            .map(Bytes)
            .ok_or_else(|| format!("invalid size {s:?}: number too large"))
    }
}

impl fmt::Display for Bytes {
    /// Binary units: `512MiB`, `8GiB`, `3.9GiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let (unit, name) = if b >= TI {
            (TI, "TiB")
        } else if b >= GI {
            (GI, "GiB")
        } else if b >= MI {
            (MI, "MiB")
        } else if b >= KI {
            (KI, "KiB")
        } else {
            return write!(f, "{b}B");
        };
        if b.is_multiple_of(unit) {
            write!(f, "{}{name}", b / unit)
        } else {
            let v = b as f64 / unit as f64;
            let s = format!("{v:.1}");
            write!(f, "{}{name}", s.strip_suffix(".0").unwrap_or(&s))
        }
    }
}

/// A CPU amount in thousandths of a CPU (`0.5` = `500m` = 500).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MilliCpus(pub u64);

impl MilliCpus {
    /// Parses `0.5`, `2` or `500m`.
    ///
    /// # Errors
    /// A message saying which spellings are accepted.
    pub fn parse(s: &str) -> Result<MilliCpus, String> {
        let s = s.trim();
        let forms = "use e.g. 0.5, 2 or 500m";
        if let Some(m) = s.strip_suffix('m') {
            return m
                .parse::<u64>()
                .map(MilliCpus)
                .map_err(|_| format!("invalid CPU amount {s:?}: {forms}"));
        }
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty()
            || !int.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
        {
            return Err(format!("invalid CPU amount {s:?}: {forms}"));
        }
        if frac.len() > 3 && frac[3..].chars().any(|c| c != '0') {
            return Err(format!(
                "invalid CPU amount {s:?}: at most three decimals (a thousandth of a CPU)"
            ));
        }
        let int: u64 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("invalid CPU amount {s:?}: number too large"))?
        };
        let mut frac3 = frac.chars().take(3).collect::<String>();
        while frac3.len() < 3 {
            frac3.push('0');
        }
        let frac3: u64 = frac3.parse().unwrap_or(0);
        int.checked_mul(1000)
            .and_then(|v| v.checked_add(frac3))
            .map(MilliCpus)
            .ok_or_else(|| format!("invalid CPU amount {s:?}: number too large"))
    }

    /// In billionths of a CPU, as Docker's `NanoCpus`.
    pub fn nanos(self) -> u64 {
        self.0 * 1_000_000
    }
}

impl fmt::Display for MilliCpus {
    /// `0.5`, `2`, `1.25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            let s = format!("{}.{:03}", self.0 / 1000, self.0 % 1000);
            write!(f, "{}", s.trim_end_matches('0'))
        }
    }
}

/// A percentage in hundredths of a percent (`85%` = 8500), from 0 to 100 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub u32);

impl Percent {
    /// 100 %.
    pub const FULL: Percent = Percent(10_000);

    /// Parses `85%` or `92.5%`.
    ///
    /// # Errors
    /// A message saying which spellings are accepted.
    pub fn parse(s: &str) -> Result<Percent, String> {
        let s = s.trim();
        let forms = "use a percentage like 85%";
        let num = s
            .strip_suffix('%')
            .ok_or_else(|| format!("invalid percentage {s:?}: {forms}"))?
            .trim();
        let v: f64 = num
            .parse()
            .map_err(|_| format!("invalid percentage {s:?}: {forms}"))?;
        if !(0.0..=100.0).contains(&v) || !v.is_finite() {
            return Err(format!(
                "invalid percentage {s:?}: must be between 0% and 100%"
            ));
        }
        Ok(Percent((v * 100.0).round() as u32))
    }

    /// `part` of `whole`, rounded down.
    pub fn of(self, whole: u64) -> u64 {
        // In 64 bits when the product fits (always, for real sizes): 128-bit division is a
        // library call, and the scheduler asks this of every node for every placement.
        match whole.checked_mul(u64::from(self.0)) {
            Some(product) => product / 10_000,
            None => (u128::from(whole) * u128::from(self.0) / 10_000) as u64,
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
        }
    }
}

/// Parses a humantime duration: `30s`, `5m`, `1h30m`, `0`.
///
/// # Errors
/// A message saying which spellings are accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e}; use e.g. 30s, 5m, 1h30m"))
}

/// Formats a duration the way manifests spell it (`30s`, `1h 30m`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_spellings_follow_spec() {
        let cases = [
            ("256MiB", 256 * MI),
            ("1GiB", GI),
            ("512Mi", 512 * MI),
            ("1Gi", GI),
            ("100GB", 100_000_000_000),
            ("100G", 100_000_000_000),
            ("500M", 500_000_000),
            ("512m", 512 * MI),
            ("1g", GI),
            ("1048576", MI),
            ("1.5GiB", GI + GI / 2),
            ("0.5g", GI / 2),
        ];
        for (s, want) in cases {
            assert_eq!(Bytes::parse(s), Ok(Bytes(want)), "{s}");
        }
        for bad in [
            "",
            "12XB",
            "MiB",
            "1..5G",
            "-1G",
            "1 G B",
            "99999999999999999999",
        ] {
            assert!(Bytes::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn memory_displays_in_binary_units() {
        assert_eq!(Bytes(512 * MI).to_string(), "512MiB");
        assert_eq!(Bytes(8 * GI).to_string(), "8GiB");
        assert_eq!(Bytes(GI + GI / 2).to_string(), "1.5GiB");
        assert_eq!(Bytes(100).to_string(), "100B");
    }

    #[test]
    fn cpus_parse_as_thousandths() {
        assert_eq!(MilliCpus::parse("0.5"), Ok(MilliCpus(500)));
        assert_eq!(MilliCpus::parse("2"), Ok(MilliCpus(2000)));
        assert_eq!(MilliCpus::parse("500m"), Ok(MilliCpus(500)));
        assert_eq!(MilliCpus::parse("1.25"), Ok(MilliCpus(1250)));
        assert_eq!(MilliCpus::parse(".5"), Ok(MilliCpus(500)));
        assert!(MilliCpus::parse("0.0001").is_err());
        assert!(MilliCpus::parse("two").is_err());
        assert!(MilliCpus::parse("").is_err());
        assert_eq!(MilliCpus(500).to_string(), "0.5");
        assert_eq!(MilliCpus(2000).to_string(), "2");
        assert_eq!(MilliCpus(500).nanos(), 500_000_000);
    }

    #[test]
    fn percentages_and_durations() {
        assert_eq!(Percent::parse("85%"), Ok(Percent(8500)));
        assert_eq!(Percent::parse("92.5%"), Ok(Percent(9250)));
        assert!(Percent::parse("85").is_err());
        assert!(Percent::parse("120%").is_err());
        assert_eq!(Percent(8500).of(1000), 850);
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30").is_err());
    }
}
