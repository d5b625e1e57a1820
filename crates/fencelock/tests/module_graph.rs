//! The library's files import each other without a circle (issue #15): each file
//! builds only on files below it, so the protocol can be read from the bottom up.
//!
//! An edge `a → b` is any path `crate::b::…` or `super::…` (resolved to the module it
//! names) written in file `a` outside comments, test modules included: a test that
//! needs a file above its own is a circle too. A file's `super::` inside its own
//! inline `mod tests` names the file itself and is no edge. A parent's `mod child;`
//! declaration and its relative paths (`redis::RedisStore` in `store/mod.rs`) are the
//! module tree, not imports, and are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/store/mod.rs` → `store`, `src/lib.rs` → `` (root).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The code of a file without comments, with a marker where a top-level inline module
/// (`mod tests {` at column 0, closed by `}` at column 0 — rustfmt's layout) starts and
/// ends, so that `super::` inside it can be told apart.
fn code_lines(text: &str) -> Vec<(bool, String)> {
    let mut inline = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if !line.starts_with(' ')
            && (line.starts_with("mod ") || line.starts_with("pub(crate) mod "))
            && line.trim_end().ends_with('{')
        {
            inline = true;
        } else if inline && line == "}" {
            inline = false;
        }
        // A trailing comment (not `://` inside a string, as in a URL).
        let code = match line.find(" // ") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push((inline, code.to_string()));
    }
    out
}

/// The paths a `use` tree or an inline path names after `crate::` / `super::`, from
/// `rest` (the text right after the prefix): `a::b`, `{a::B, c::{self, D}}` ….
fn paths_after(rest: &str) -> Vec<Vec<String>> {
    fn parse(chars: &[char], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *at < chars.len() && chars[*at].is_whitespace() {
                *at += 1;
            }
            if *at < chars.len() && chars[*at] == '{' {
                *at += 1;
                loop {
                    parse(chars, at, &path, out);
                    while *at < chars.len() && chars[*at].is_whitespace() {
                        *at += 1;
                    }
                    match chars.get(*at) {
                        Some(',') => {
                            *at += 1;
                            while *at < chars.len() && chars[*at].is_whitespace() {
                                *at += 1;
                            }
                            if chars.get(*at) == Some(&'}') {
                                *at += 1;
                                return;
                            }
                        }
                        Some('}') => {
                            *at += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            }
            let start = *at;
            while *at < chars.len() && is_ident_char(chars[*at]) {
                *at += 1;
            }
            if *at == start {
                break;
            }
            let ident: String = chars[start..*at].iter().collect();
            if ident != "self" {
                path.push(ident);
            }
            if chars.get(*at) == Some(&':') && chars.get(*at + 1) == Some(&':') {
                *at += 2;
            } else {
                break;
            }
        }
        out.push(path);
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    parse(&chars, &mut at, &[], &mut out);
    out
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// `file module → modules it imports`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let name = |m: &[String]| {
        if m.is_empty() {
            "lib".to_string()
        } else {
            m.join("::")
        }
    };
    let mut graph = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        let text = std::fs::read_to_string(file).expect("read source");
        let lines = code_lines(&text);
        // Joined, so that a `use crate::{…}` over several lines parses as one.
        let mut joined = String::new();
        let mut in_tests = Vec::new();
        for (inline, code) in &lines {
            for _ in code.chars() {
                in_tests.push(*inline);
            }
            in_tests.push(*inline);
            joined.push_str(code);
            joined.push('\n');
        }
        let chars: Vec<char> = joined.chars().collect();
        let mut edges = BTreeSet::new();
        for (prefix, is_super) in [("crate::", false), ("super::", true)] {
            let p: Vec<char> = prefix.chars().collect();
            let mut i = 0;
            while i + p.len() <= chars.len() {
                let before = i.checked_sub(1).map(|b| chars[b]);
                if chars[i..i + p.len()] == p[..]
                    && !before.is_some_and(|c| is_ident_char(c) || c == '$' || c == ':')
                {
                    let rest: String = chars[i + p.len()..].iter().take(2000).collect();
                    let base: Vec<String> = if is_super {
                        if in_tests[i] {
                            // `super` of a file's own test module: the file itself.
                            me.clone()
                        } else {
                            me[..me.len().saturating_sub(1)].to_vec()
                        }
                    } else {
                        Vec::new()
                    };
                    for path in paths_after(&rest) {
                        let full: Vec<String> = base.iter().cloned().chain(path).collect();
                        if let Some(target) = resolve(&full, &modules)
                            && target != me
                            && !target.is_empty()
                        {
                            edges.insert(name(&target));
                        }
                    }
                    i += p.len();
                } else {
                    i += 1;
                }
            }
        }
        graph.insert(name(&me), edges);
    }
    graph
}

/// The import circles: strongly connected components of more than one file (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_import_circle_among_the_library_files() {
    let graph = import_graph();
    let found = circles(&graph);
    let mut report = String::new();
    for component in &found {
        report.push_str(&format!("\ncircle among {}:", component.join(", ")));
        for from in component {
            let inside: Vec<&str> = graph[from]
                .iter()
                .filter(|to| component.contains(to))
                .map(String::as_str)
                .collect();
            report.push_str(&format!("\n  {from} → {}", inside.join(", ")));
        }
    }
    assert!(found.is_empty(), "import circles:{report}");
}

/// The reader itself: it sees grouped, nested and multi-line imports, inline paths,
/// and `super::` both ways.
#[test]
fn the_reader_sees_every_form_of_import() {
    assert_eq!(
        paths_after("{a::B, c::{self, d::E},\n f}; x"),
        [
            vec!["a".to_string(), "B".to_string()],
            vec!["c".to_string()],
            vec!["c".to_string(), "d".to_string(), "E".to_string()],
            vec!["f".to_string()],
        ]
    );
    assert_eq!(paths_after("keys::validate(x)"), [vec!["keys", "validate"]]);
    let graph = import_graph();
    // Known edges of today's tree, so the reader cannot silently go blind.
    assert!(graph["fanout"].contains("store"), "{graph:?}");
    assert!(graph["store::redis::notify"].contains("error"), "{graph:?}");
    assert!(graph["store::redis"].contains("store"), "{graph:?}");
}

/// `lib.rs`'s "Layout" section names every file, and lists them so that each builds
/// only on files listed below it (a file under `store/` counts as the `store/` line):
/// the section stays true as files come and go. Test-only files may sit anywhere.
#[test]
fn the_layout_in_lib_rs_names_every_file_above_the_files_it_builds_on() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let start = lib.find("//! ## Layout").expect("a Layout section");
    let section: Vec<&str> = lib[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("//!") && !l.starts_with("//! ##"))
        .collect();
    // Bullet i: the text of the i-th "- " item with its continuation lines.
    let mut bullets: Vec<String> = Vec::new();
    for line in section {
        let text = line.trim_start_matches("//!").trim();
        if let Some(item) = text.strip_prefix("- ") {
            bullets.push(item.to_string());
        } else if let Some(last) = bullets.last_mut() {
            last.push(' ');
            last.push_str(text);
        }
    }
    let graph = import_graph();
    let position = |module: &str| -> Option<usize> {
        if module.starts_with("store") {
            return bullets.iter().position(|b| b.starts_with("`store/`"));
        }
        let file = format!("`{module}.rs`");
        bullets.iter().position(|b| b.contains(&file))
    };
    let mut problems = Vec::new();
    for (from, targets) in &graph {
        if from == "lib" {
            continue;
        }
        let Some(at) = position(from) else {
            problems.push(format!("{from}: no line in the Layout section"));
            continue;
        };
        let test_only = bullets[at].contains("(tests only)");
        for to in targets {
            if let Some(below) = position(to)
                && below < at
                && !test_only
            {
                problems.push(format!("{from} builds on {to}, which is listed above it"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "lib.rs Layout:\n{}",
        problems.join("\n")
    );
}
