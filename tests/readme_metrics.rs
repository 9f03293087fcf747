//! The README's metrics table names exactly the metrics yaad sends, under their statsd and
//! their Prometheus names: the constants of src/observe.rs, `cmd.<command>` for each of its
//! `COMMANDS` and `error.<REPLY>` for each of its `ERRORS`, and what `prometheus_name` makes
//! of each. A metric added, renamed or removed in one of the two and not in the other fails
//! here.

use std::collections::{BTreeMap, BTreeSet};

use yaad::observe::{COMMANDS, ERRORS, STATSD_SKIPS, prometheus_name};

const README: &str = include_str!("../README.md");
const OBSERVE: &str = include_str!("../src/observe.rs");

/// The text between backticks in `s`, in order.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The string literals in `s`, in order (observe.rs's names contain no escapes).
fn literals(s: &str) -> Vec<&str> {
    s.split('"').skip(1).step_by(2).collect()
}

/// One row of the README's table: the statsd names it stands for (none for a Prometheus-only
/// row) and its Prometheus cell.
struct Row {
    statsd: Vec<String>,
    /// A pattern row (`cmd.<command>`): its Prometheus cell names the label, not its value.
    pattern: bool,
    prometheus: String,
    /// counter, gauge or timer.
    kind: String,
}

/// The rows of README's metrics table. A row whose statsd name is a pattern (`cmd.<command>`)
/// stands for every name of that prefix given in backticks in its meaning column.
fn readme_rows() -> Vec<Row> {
    let section = README
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README.md has a `## Metrics` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (statsd, prometheus, meaning) = (cells[1], cells[2], cells[4]);
        if !prometheus.starts_with('`') {
            continue; // the header
        }
        let prometheus = prometheus.trim_matches('`').to_string();
        let kind = cells[3].to_string();
        let row = match statsd.trim_matches('`').split_once('<') {
            _ if statsd == "–" => Row {
                statsd: Vec::new(),
                pattern: false,
                prometheus,
                kind,
            },
            Some((prefix, _)) => Row {
                statsd: backticked(meaning)
                    .into_iter()
                    .filter(|n| n.starts_with(prefix))
                    .map(String::from)
                    .collect(),
                pattern: true,
                prometheus,
                kind,
            },
            None => Row {
                statsd: vec![statsd.trim_matches('`').to_string()],
                pattern: false,
                prometheus,
                kind,
            },
        };
        rows.push(row);
    }
    rows
}

/// The names observe.rs can send: its `pub const NAME: &str = "..."` items, and `cmd.` and
/// `error.` followed by each of its commands and error replies.
fn observe_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in OBSERVE.lines() {
        let line = line.trim();
        if line.starts_with("pub const ") && line.contains(": &str = ") {
            names.extend(literals(line).into_iter().map(String::from));
        }
    }
    names.extend(COMMANDS.iter().map(|c| format!("cmd.{c}")));
    names.extend(ERRORS.iter().map(|r| format!("error.{r}")));
    names
}

/// How the README writes a metric's Prometheus name: `name`, `name{label="value"}`, or in a
/// pattern row `name{label}`.
fn prometheus_cell(statsd: &str, pattern: bool) -> String {
    match prometheus_name(statsd) {
        None => format!("no Prometheus name for {statsd}"),
        Some((name, None)) => name.to_string(),
        Some((name, Some((label, _)))) if pattern => format!("{name}{{{label}}}"),
        Some((name, Some((label, value)))) => format!("{name}{{{label}=\"{value}\"}}"),
    }
}

#[test]
fn readme_lists_exactly_the_metrics_observe_sends() {
    let rows = readme_rows();
    let readme: BTreeSet<String> = rows.iter().flat_map(|r| r.statsd.clone()).collect();
    let code = observe_names();
    // The parsers found something of each kind (a broken parser must not pass as "equal").
    for prefix in ["cmd.", "error.", "jobs."] {
        assert!(
            code.iter().any(|n| n.starts_with(prefix)),
            "no {prefix} name found in src/observe.rs"
        );
    }
    assert_eq!(
        code.iter().filter(|n| n.starts_with("cmd.")).count(),
        32,
        "25 beanstalkd commands, 6 of named jobs and cmd.latency"
    );
    let sent: BTreeSet<String> = code
        .iter()
        .filter(|n| !STATSD_SKIPS.contains(&n.as_str()))
        .cloned()
        .collect();
    let missing: Vec<_> = sent.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(&sent).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README.md's metrics table and src/observe.rs differ:\n  sent but not in README: \
         {missing:?}\n  in README but not sent: {unknown:?}"
    );
}

#[test]
fn readme_gives_each_metric_its_prometheus_name() {
    let rows = readme_rows();
    let mut wrong = BTreeMap::new();
    for row in &rows {
        for name in &row.statsd {
            let want = prometheus_cell(name, row.pattern);
            if want != row.prometheus {
                wrong.insert(name.clone(), (row.prometheus.clone(), want));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "README.md's Prometheus names differ from src/observe.rs (statsd name: (README, code)): \
         {wrong:?}"
    );
    // The Prometheus-only rows: one per metric statsd skips, the labels its call gives.
    let only: Vec<&str> = rows
        .iter()
        .filter(|r| r.statsd.is_empty())
        .map(|r| r.prometheus.split('{').next().unwrap_or(""))
        .collect();
    let skipped: Vec<&str> = STATSD_SKIPS
        .iter()
        .map(|n| prometheus_name(n).expect("a Prometheus name").0)
        .collect();
    assert_eq!(only, skipped, "the Prometheus-only rows");
    // Prometheus' conventions: a prefix, `_total` on counters only, timers in seconds.
    for row in &rows {
        let name = row.prometheus.split('{').next().unwrap_or("");
        assert!(name.starts_with("yaad_"), "{name}: no yaad_ prefix");
        assert_eq!(
            name.ends_with("_total"),
            row.kind == "counter",
            "{name} ({}): `_total` on counters only",
            row.kind
        );
        assert_eq!(
            name.ends_with("_seconds"),
            row.kind == "timer",
            "{name} ({}): timers in seconds",
            row.kind
        );
    }
}
