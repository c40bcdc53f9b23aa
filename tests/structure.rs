//! The shape `ARCHITECTURE.md` promises, kept true: imports follow the data
//! flow, and no function outside tests, benches and the simulator is longer
//! than a person reads in one sitting (100 lines).

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a file before its `#[cfg(test)]` module.
fn code(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap();
    match s.find("\n#[cfg(test)]") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// The crate modules a file names (`crate::x`), outside comments.
fn imports(p: &Path) -> Vec<String> {
    let mut out = vec![];
    for line in code(p).lines() {
        let l = line.trim_start();
        if l.starts_with("//") {
            continue;
        }
        let mut rest = l;
        while let Some(i) = rest.find("crate::") {
            let name: String = rest[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
            rest = &rest[i + 7..];
        }
    }
    out
}

#[test]
fn imports_follow_the_data_flow() {
    let rules: [(&str, &[&str]); 3] = [
        ("catalog.rs", &["*"]),
        (
            "store",
            &[
                "carat", "sync", "schedule", "api", "snapshot", "state", "cli", "daemon",
            ],
        ),
        ("api", &["store", "sync", "carat", "cli", "daemon"]),
    ];
    let mut broken = vec![];
    for (place, forbidden) in rules {
        let p = src().join(place);
        let files = if p.is_dir() { sources(&p) } else { vec![p] };
        for f in files {
            for m in imports(&f) {
                let own = place.trim_end_matches(".rs");
                if m != own && (forbidden.contains(&"*") || forbidden.contains(&m.as_str())) {
                    broken.push(format!("{} imports crate::{m}", f.display()));
                }
            }
        }
    }
    // Nothing in the daemon's library imports the command line.
    for f in sources(&src()) {
        let rel = f.strip_prefix(src()).unwrap().to_string_lossy().into_owned();
        if rel.starts_with("cli/") || rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        if imports(&f).iter().any(|m| m == "cli") {
            broken.push(format!("{rel} imports crate::cli"));
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the flow:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_function_outside_tests_and_the_simulator_runs_past_100_lines() {
    let mut long = vec![];
    for f in sources(&src()) {
        let rel = f.strip_prefix(src()).unwrap().to_string_lossy().into_owned();
        if rel.starts_with("sim/") || rel.starts_with("bin/") {
            continue;
        }
        let code = code(&f);
        let lines: Vec<&str> = code.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let l = lines[i];
            let t = l.trim_start();
            let indent = l.len() - t.len();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
                "const fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if is_fn && !t.trim_end().ends_with(';') {
                let close = format!("{}}}", " ".repeat(indent));
                let end = (i + 1..lines.len()).find(|&j| lines[j].trim_end() == close);
                if let Some(end) = end {
                    let n = end - i + 1;
                    if n > 100 {
                        long.push(format!("{rel}:{}: {n} lines: {}", i + 1, t.trim()));
                    }
                }
            }
            i += 1;
        }
    }
    assert!(long.is_empty(), "functions past 100 lines:\n{}", long.join("\n"));
}
