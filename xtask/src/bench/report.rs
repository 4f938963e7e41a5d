//! What a benchmark returns, and the two ways it is printed: a table for people, JSON for
//! machines. Every number here was measured in this invocation; nothing is quoted from elsewhere.

use std::fmt::Write as _;

use super::stats::Stats;

/// One benchmark's results.
pub struct Section {
    /// The benchmark's name (`--only NAME`).
    pub name: &'static str,
    pub title: String,
    /// The peer tool measured beside us (e.g. "dvc 3.67.1"), if any.
    pub peer: Option<String>,
    pub rows: Vec<Row>,
    pub notes: Vec<Note>,
}

impl Section {
    pub fn new(name: &'static str, title: impl Into<String>) -> Section {
        Section { name, title: title.into(), peer: None, rows: Vec::new(), notes: Vec::new() }
    }

    pub fn row(&mut self, row: Row) -> &mut Self {
        self.rows.push(row);
        self
    }

    /// A finding: `key`/`value` for JSON, `text` for the table.
    pub fn note(&mut self, key: &'static str, value: Json, text: impl Into<String>) -> &mut Self {
        self.notes.push(Note { key, value, text: text.into() });
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Wall time in seconds (printed as s / ms / µs).
    Seconds,
    /// A dimensionless factor (printed as `12.3x`).
    Factor,
    /// A rate, higher is better (printed with its unit, e.g. `MB/s`).
    Rate(&'static str),
    /// Memory in MiB (printed as `123 MiB`).
    MiB,
    /// A share of the wall time, lower is better (printed as `12.3%`).
    Share,
}

impl Unit {
    fn json_name(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Factor => "x",
            Unit::Rate(u) => u,
            Unit::MiB => "MiB",
            Unit::Share => "share",
        }
    }
}

/// One line of a table: our figure, the peer's (when measured), and their ratio peer/ours.
pub struct Row {
    pub label: String,
    pub unit: Unit,
    pub ours: Option<f64>,
    pub peer: Option<f64>,
    /// How many samples the figure summarises (0: not a sample statistic).
    pub n: usize,
}

impl Row {
    pub fn time(label: impl Into<String>, ours: Option<f64>, peer: Option<f64>, n: usize) -> Row {
        Row { label: label.into(), unit: Unit::Seconds, ours, peer, n }
    }

    /// Median and p90 rows for our samples and, when given, the peer's.
    pub fn median_p90(what: &str, ours: &Stats, peer: Option<&Stats>) -> [Row; 2] {
        let n = ours.n();
        [
            Row::time(format!("{what} median (n={n})"), Some(ours.median()), peer.map(Stats::median), n),
            Row::time(format!("{what} p90 (n={n})"), Some(ours.p90()), peer.map(Stats::p90), n),
        ]
    }

    pub fn factor(label: impl Into<String>, ours: f64) -> Row {
        Row { label: label.into(), unit: Unit::Factor, ours: Some(ours), peer: None, n: 0 }
    }

    /// A rate (higher is better), e.g. `Row::rate("MB/s", "throughput", ours, peer)`.
    pub fn rate(unit: &'static str, label: impl Into<String>, ours: Option<f64>, peer: Option<f64>) -> Row {
        Row { label: label.into(), unit: Unit::Rate(unit), ours, peer, n: 0 }
    }

    /// Memory in MiB (lower is better).
    pub fn mib(label: impl Into<String>, ours: Option<f64>, peer: Option<f64>) -> Row {
        Row { label: label.into(), unit: Unit::MiB, ours, peer, n: 0 }
    }

    /// A share of the wall time (0..1, lower is better).
    pub fn share(label: impl Into<String>, ours: Option<f64>, peer: Option<f64>) -> Row {
        Row { label: label.into(), unit: Unit::Share, ours, peer, n: 0 }
    }

    /// peer / ours for times and memory (how many times slower or bigger the peer is), ours /
    /// peer for rates (how many times faster we are): above 1, aurora does better.
    pub fn ratio(&self) -> Option<f64> {
        match (self.unit, self.ours, self.peer) {
            (Unit::Seconds | Unit::MiB | Unit::Share, Some(o), Some(p)) if o > 0.0 => Some(p / o),
            (Unit::Rate(_), Some(o), Some(p)) if p > 0.0 => Some(o / p),
            _ => None,
        }
    }
}

pub struct Note {
    pub key: &'static str,
    pub value: Json,
    pub text: String,
}

/// `1.23 s`, `45.6 ms`, `789 µs`.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        "n/a".into()
    } else if s < 0.0 {
        format!("-{}", fmt_secs(-s))
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn fmt_value(unit: Unit, v: Option<f64>) -> String {
    match (unit, v) {
        (_, None) => "-".into(),
        (Unit::Seconds, Some(v)) => fmt_secs(v),
        (Unit::Factor, Some(v)) => format!("{v:.2}x"),
        (Unit::Rate(u), Some(v)) if v >= 1e6 => format!("{:.2} M{u}", v / 1e6),
        (Unit::Rate(u), Some(v)) => format!("{v:.2} {u}"),
        (Unit::MiB, Some(v)) => format!("{v:.0} MiB"),
        (Unit::Share, Some(v)) => format!("{:.1}%", v * 100.0),
    }
}

/// The human-readable table: a header (machine, setup), then one block per benchmark.
pub fn table(header: &[(String, String)], sections: &[Section]) -> String {
    let mut out = String::new();
    let key_width = header.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in header {
        let _ = writeln!(out, "{k:<key_width$}  {v}");
    }
    for s in sections {
        let peer = s.peer.as_deref().unwrap_or("peer");
        let label_width = s.rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(0).max(6);
        let peer_width = peer.chars().count().max(10);
        let peer_name = peer.split(' ').next().unwrap_or(peer);
        // Rates are compared the other way round (ours / peer), so that above 1 always means
        // aurora does better; a section of rates and times says both.
        let has_rates = s.rows.iter().any(|r| matches!(r.unit, Unit::Rate(_)) && r.peer.is_some());
        let ratio_head = if has_rates { "aurora better by".to_string() } else { format!("{peer_name}/aurora") };
        let _ = writeln!(out, "\n== {}: {} ==", s.name, s.title);
        let _ = write!(out, "  {:<label_width$}  {:>10}", "", "aurora");
        if s.peer.is_some() {
            let _ = write!(out, "  {peer:>peer_width$}  {ratio_head:>12}");
        }
        out.push('\n');
        for r in &s.rows {
            let _ = write!(out, "  {:<label_width$}  {:>10}", r.label, fmt_value(r.unit, r.ours));
            if s.peer.is_some() {
                let ratio = r.ratio().map_or("-".into(), |x| format!("{x:.1}x"));
                let _ = write!(out, "  {:>peer_width$}  {ratio:>12}", fmt_value(r.unit, r.peer));
            }
            // Trim the padding of rows without peer columns.
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
        for n in &s.notes {
            let _ = writeln!(out, "  * {}", n.text);
        }
    }
    out
}

/// The machine-readable report.
pub fn json(header: &[(String, String)], sections: &[Section], total_s: f64) -> String {
    let header = Json::Obj(header.iter().map(|(k, v)| (k.clone(), Json::Str(v.clone()))).collect());
    let benchmarks = sections
        .iter()
        .map(|s| {
            let rows = s
                .rows
                .iter()
                .map(|r| {
                    Json::Obj(vec![
                        ("label".into(), Json::Str(r.label.trim().to_string())),
                        ("unit".into(), Json::Str(r.unit.json_name().into())),
                        ("aurora".into(), Json::num(r.ours.map(round9))),
                        ("peer".into(), Json::num(r.peer.map(round9))),
                        (
                            if matches!(r.unit, Unit::Rate(_)) { "aurora_over_peer" } else { "peer_over_aurora" }
                                .into(),
                            Json::num(r.ratio().map(round9)),
                        ),
                        ("n".into(), Json::Num(r.n as f64)),
                    ])
                })
                .collect();
            Json::Obj(vec![
                ("name".into(), Json::Str(s.name.into())),
                ("title".into(), Json::Str(s.title.clone())),
                ("peer".into(), s.peer.clone().map_or(Json::Null, Json::Str)),
                ("rows".into(), Json::Arr(rows)),
                ("findings".into(), Json::Obj(s.notes.iter().map(|n| (n.key.to_string(), n.value.clone())).collect())),
                ("notes".into(), Json::Arr(s.notes.iter().map(|n| Json::Str(n.text.clone())).collect())),
            ])
        })
        .collect();
    let doc = Json::Obj(vec![
        ("header".into(), header),
        ("benchmarks".into(), Json::Arr(benchmarks)),
        ("total_s".into(), Json::Num(total_s)),
    ]);
    let mut out = String::new();
    doc.write(&mut out, 0);
    out.push('\n');
    out
}

/// Nanosecond precision is all a timing has (and it keeps float noise out of the JSON).
fn round9(v: f64) -> f64 {
    (v * 1e9).round() / 1e9
}

/// A minimal JSON value (xtask stays free of serde).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn num(v: Option<f64>) -> Json {
        match v {
            Some(v) if v.is_finite() => Json::Num(v),
            _ => Json::Null,
        }
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n("  ", n));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(v) if !v.is_finite() => out.push_str("null"),
            Json::Num(v) => {
                let _ = write!(out, "{v}");
            }
            Json::Str(s) => write_json_string(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, indent + 1);
                    item.write(out, indent + 1);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(out, indent + 1);
                    write_json_string(out, k);
                    out.push_str(": ");
                    v.write(out, indent + 1);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

/// `s` as a JSON string literal (xtask has no serde_json, to build in seconds).
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_printed_in_a_readable_unit() {
        assert_eq!(fmt_secs(12.34), "12.3 s");
        assert_eq!(fmt_secs(1.234), "1.23 s");
        assert_eq!(fmt_secs(0.0456), "45.6 ms");
        assert_eq!(fmt_secs(0.00456), "4.56 ms");
        assert_eq!(fmt_secs(0.000_456), "456.0 µs");
        assert_eq!(fmt_secs(-0.003), "-3.00 ms");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        write_json_string(&mut s, "a \"b\"\\\nc\u{1}é");
        assert_eq!(s, r#""a \"b\"\\\nc\u0001é""#);
    }

    #[test]
    fn json_escapes_and_nulls() {
        let mut s = String::new();
        Json::Obj(vec![
            ("a\"b".into(), Json::Str("x\ny".into())),
            ("n".into(), Json::num(Some(f64::NAN))),
            ("v".into(), Json::Arr(vec![Json::Num(1.5), Json::Bool(true)])),
        ])
        .write(&mut s, 0);
        assert_eq!(s, "{\n  \"a\\\"b\": \"x\\ny\",\n  \"n\": null,\n  \"v\": [\n    1.5,\n    true\n  ]\n}");
    }

    #[test]
    fn table_shows_the_ratio_peer_over_ours() {
        let mut s = Section::new("noop", "no-op");
        s.peer = Some("dvc 3.0".into());
        s.row(Row::time("median", Some(0.010), Some(0.500), 3));
        s.row(Row::factor("growth", 9.5));
        s.note("goal_met", Json::Bool(true), "goal met");
        let t = table(&[("machine".into(), "x".into())], &[s]);
        assert!(t.contains("dvc/aurora"), "{t}");
        assert!(t.contains("10.0 ms"), "{t}");
        assert!(t.contains("500.0 ms"), "{t}");
        assert!(t.contains("50.0x"), "{t}");
        assert!(t.contains("9.50x"), "{t}");
        assert!(t.contains("* goal met"), "{t}");
    }
}
