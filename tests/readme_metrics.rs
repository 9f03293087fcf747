//! The README's metrics table names exactly the statsd metrics yaad sends: the constants and
//! the `cmd.<command>` and `error.<REPLY>` names of src/observe.rs. A metric added, renamed or
//! removed in one of the two and not in the other fails here.

use std::collections::BTreeSet;

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

/// The names in README's metrics table. A row whose name is a pattern (`cmd.<command>`) stands
/// for every name of that prefix given in backticks in its meaning column.
fn readme_names() -> BTreeSet<String> {
    let section = README
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README.md has a `## Metrics` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (name, meaning) = (cells[1].trim_matches('`'), cells[3]);
        match name.split_once('<') {
            Some((prefix, _)) => names.extend(
                backticked(meaning)
                    .into_iter()
                    .filter(|n| n.starts_with(prefix))
                    .map(String::from),
            ),
            None => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The names observe.rs can send: its `pub const NAME: &str = "..."` items, `cmd.` followed by
/// each command of `command_metric`'s list, and every `"error.` literal.
fn observe_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in OBSERVE.lines() {
        let line = line.trim();
        if line.starts_with("pub const ") && line.contains(": &str = ") {
            names.extend(literals(line).into_iter().map(String::from));
        }
        names.extend(
            literals(line)
                .into_iter()
                .filter(|l| l.starts_with("error."))
                .map(String::from),
        );
    }
    let commands = OBSERVE
        .split("names!(\n")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("observe.rs lists the commands in a `names!(` call");
    names.extend(literals(commands).into_iter().map(|c| format!("cmd.{c}")));
    names
}

#[test]
fn readme_lists_exactly_the_metrics_observe_sends() {
    let readme = readme_names();
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
        26,
        "25 commands and cmd.latency"
    );
    let missing: Vec<_> = code.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(&code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README.md's metrics table and src/observe.rs differ:\n  sent but not in README: \
         {missing:?}\n  in README but not sent: {unknown:?}"
    );
}
