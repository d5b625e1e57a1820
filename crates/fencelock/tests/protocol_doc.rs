//! `docs/protocol.md` agrees with the code it describes.
//!
//! Other-language clients are built against that document, so it must not drift from
//! the scripts. Pure file reading, no server:
//!
//! - every `.lua` file in `src/store/redis/` has a block in the document, and each
//!   script's header lines `-- KEYS: …` and `-- ARGV: …` (with their indented
//!   continuation lines) read the same in the document's block as in the script;
//! - every sibling-key suffix the library builds (`<key>:fencelock:<suffix>`, found in
//!   the sources) is named in the document;
//! - the document's title states the wire protocol version of CHANGELOG.md's
//!   `## [Unreleased]` heading.
//!
//! The document's script blocks are fenced code blocks whose first line is
//! `-- <file>.lua`, followed by the header lines copied from the script.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The document, from the workspace root.
const DOC: &str = "docs/protocol.md";
/// The Lua scripts, from the workspace root.
const SCRIPTS: &str = "crates/fencelock/src/store/redis";
/// The library's sources, from the workspace root.
const SOURCES: &str = "crates/fencelock/src";
/// The file `redis.rs` prepends to several scripts: no KEYS or ARGV of its own.
const PRELUDE: &str = "shared.lua";
/// Where sibling keys and channels are named.
const SIBLING_MARK: &str = ":fencelock:";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A script's argument lists as its header states them (whitespace collapsed).
#[derive(Debug, Default, PartialEq, Eq)]
struct Header {
    keys: Option<String>,
    argv: Option<String>,
}

impl Header {
    /// Reads the `-- KEYS:` and `-- ARGV:` entries of a leading comment block. An entry
    /// continues on the following lines that start with `--` and at least two spaces
    /// (`--       …`); any other line ends it. Parsing stops at the first line that is
    /// not a comment, so code below the header is never read.
    fn parse<'a>(lines: impl IntoIterator<Item = &'a str>, what: &str) -> Header {
        let mut header = Header::default();
        let mut open: Option<(&'static str, String)> = None;
        let close = |open: &mut Option<(&'static str, String)>, header: &mut Header| {
            if let Some((name, text)) = open.take() {
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                let slot = if name == "KEYS" {
                    &mut header.keys
                } else {
                    &mut header.argv
                };
                assert!(
                    slot.is_none(),
                    "{what}: two `-- {name}:` lines; a script states its {name} once"
                );
                *slot = Some(text);
            }
        };
        for line in lines {
            let line = line.trim_end();
            if !line.starts_with("--") {
                break;
            }
            if let Some((_, text)) = open.as_mut()
                && line.starts_with("--  ")
            {
                text.push(' ');
                text.push_str(line.trim_start_matches('-').trim());
                continue;
            }
            close(&mut open, &mut header);
            for name in ["KEYS", "ARGV"] {
                if let Some(rest) = line.strip_prefix(&format!("-- {name}:")) {
                    open = Some((name, rest.to_string()));
                }
            }
        }
        close(&mut open, &mut header);
        header
    }

    fn show(&self) -> String {
        let line = |name: &str, v: &Option<String>| match v {
            Some(text) => format!("-- {name}: {text}"),
            None => format!("(no -- {name}: line)"),
        };
        format!(
            "{}\n    {}",
            line("KEYS", &self.keys),
            line("ARGV", &self.argv)
        )
    }
}

/// The `.lua` files beside `redis.rs`, by file name, with their headers.
fn scripts() -> BTreeMap<String, Header> {
    let dir = root().join(SCRIPTS);
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut out = BTreeMap::new();
    for entry in entries {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".lua") {
            let text = read(&format!("{SCRIPTS}/{name}"));
            let header = Header::parse(text.lines(), &format!("{SCRIPTS}/{name}"));
            assert!(!stem.is_empty());
            out.insert(name, header);
        }
    }
    assert!(
        out.contains_key("acquire.lua"),
        "no acquire.lua in {SCRIPTS}: has the layout moved? Update this test's paths"
    );
    out
}

/// The document's script blocks: fenced code blocks whose first line is
/// `-- <file>.lua`, by file name.
fn documented_scripts(doc: &str) -> BTreeMap<String, Header> {
    let mut out = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("```") {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        let Some(name) = block.first().and_then(|l| l.trim().strip_prefix("-- ")) else {
            continue;
        };
        if !name.ends_with(".lua") || name.contains(' ') {
            continue;
        }
        let header = Header::parse(block[1..].iter().copied(), &format!("{DOC}, block {name}"));
        assert!(
            out.insert(name.to_string(), header).is_none(),
            "{DOC} has two blocks for {name}: keep one"
        );
    }
    out
}

#[test]
fn every_script_is_documented_with_its_keys_and_argv() {
    let doc = read(DOC);
    let documented = documented_scripts(&doc);
    let mut problems = Vec::new();
    for (name, header) in scripts() {
        if name != PRELUDE && (header.keys.is_none() || header.argv.is_none()) {
            problems.push(format!(
                "{SCRIPTS}/{name}: its header comment must state `-- KEYS: …` and \
                 `-- ARGV: …` (`-- ARGV: none` when it takes none), as acquire.lua does"
            ));
            continue;
        }
        match documented.get(&name) {
            None => problems.push(format!(
                "{DOC} does not document {name}: add a block\n    ```lua\n    -- {name}\n    \
                 {}\n    ```\nwith the script's header lines copied verbatim, and describe it",
                header.show()
            )),
            Some(doc_header) if *doc_header != header => problems.push(format!(
                "{DOC} and {SCRIPTS}/{name} disagree.\n  script says:\n    {}\n  \
                 document says:\n    {}\nUpdate the `-- {name}` block in {DOC} (and the \
                 tables around it) to match the script; if the script's arguments changed, \
                 that is a wire protocol change: say so in CHANGELOG.md under `Wire protocol`",
                header.show(),
                doc_header.show()
            )),
            Some(_) => {}
        }
    }
    let on_disk = scripts();
    for name in documented.keys() {
        if !on_disk.contains_key(name) {
            problems.push(format!(
                "{DOC} documents {name}, which is not in {SCRIPTS}: remove its block or fix \
                 its name"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

/// The suffixes after `:fencelock:` that a source text names: `fence`, `queue-deadline`,
/// `to:` (a suffix that continues with a variable part keeps its colon).
fn sibling_suffixes(text: &str, found: &mut BTreeMap<String, String>, file: &str) {
    for (at, _) in text.match_indices(SIBLING_MARK) {
        let rest = &text[at + SIBLING_MARK.len()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        if len == 0 {
            continue; // the bare marker (`keys.rs` reserves it)
        }
        let mut suffix = rest[..len].to_string();
        if rest[len..].starts_with(':') {
            suffix.push(':');
        }
        found.entry(suffix).or_insert_with(|| file.to_string());
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "lua" || e == "sql")
        {
            files.push(path);
        }
    }
}

#[test]
fn every_sibling_key_and_channel_is_documented() {
    let doc = read(DOC);
    let mut files = Vec::new();
    walk(&root().join(SOURCES), &mut files);
    let mut found = BTreeMap::new();
    for path in &files {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let shown = path
            .strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string();
        sibling_suffixes(&text, &mut found, &shown);
    }
    for expected in ["fence", "holder", "queue", "released"] {
        assert!(
            found.contains_key(expected),
            "no `{SIBLING_MARK}{expected}` found in {SOURCES}: has the naming moved? \
             Update this test"
        );
    }
    let missing: Vec<String> = found
        .iter()
        // `{<key>}:fencelock:c:…`: a Redis Cluster key without a hash tag (layout.rs).
        .filter(|(suffix, _)| {
            !doc.contains(&format!("<key>{SIBLING_MARK}{suffix}"))
                && !doc.contains(&format!("{{<key>}}{SIBLING_MARK}{suffix}"))
        })
        .map(|(suffix, file)| {
            format!("`<key>{SIBLING_MARK}{suffix}` (named in {file}) is not in {DOC}: document it")
        })
        .collect();
    assert!(missing.is_empty(), "\n{}\n", missing.join("\n"));
}

/// `N` from a line ending in `wire protocol N`.
fn protocol_version(line: &str) -> Option<u32> {
    let lower = line.to_lowercase();
    let at = lower.rfind("wire protocol ")?;
    lower[at + "wire protocol ".len()..].trim().parse().ok()
}

#[test]
fn the_document_states_the_changelog_protocol_version() {
    let changelog = read("CHANGELOG.md");
    let unreleased = changelog
        .lines()
        .find(|l| l.starts_with("## [Unreleased]"))
        .expect("CHANGELOG.md has no `## [Unreleased]` heading");
    let wanted = protocol_version(unreleased).unwrap_or_else(|| {
        panic!(
            "CHANGELOG.md's heading {unreleased:?} states no wire protocol: it should read \
             `## [Unreleased] — wire protocol N` (see its Versions section)"
        )
    });
    let doc = read(DOC);
    let title = doc.lines().next().unwrap_or_default();
    let stated = title
        .strip_prefix("# The fencelock wire protocol — version ")
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or_else(|| {
            panic!(
                "{DOC} must open with `# The fencelock wire protocol — version N`; it opens \
                 with {title:?}"
            )
        });
    assert_eq!(
        stated, wanted,
        "{DOC} describes wire protocol {stated}, CHANGELOG.md's [Unreleased] is wire protocol \
         {wanted}: update the document (its title, and what changed, in its Versions section)"
    );
}

#[test]
fn the_prelude_is_what_redis_rs_prepends() {
    let redis_rs = read(&format!("{SOURCES}/store/redis.rs"));
    assert!(
        redis_rs.contains(&format!("include_str!(\"redis/{PRELUDE}\")")),
        "redis.rs no longer prepends {PRELUDE}: update PRELUDE in this test and the \
         document's section on it"
    );
}

#[test]
fn headers_parse_as_documented() {
    let script = "-- Intro.\n--\n-- KEYS: a, b\n-- ARGV: x,\n--       [y]\n-- Returns 1.\nlocal x = 1\n-- ARGV: later";
    assert_eq!(
        Header::parse(script.lines(), "sample"),
        Header {
            keys: Some("a, b".into()),
            argv: Some("x, [y]".into()),
        }
    );
    let mut found = BTreeMap::new();
    sibling_suffixes(
        "format!(\"{key}:fencelock:to:{inbox}\") \":fencelock:queue-deadline\" \":fencelock:\"",
        &mut found,
        "f",
    );
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["queue-deadline", "to:"],
        "suffix scanner"
    );
    assert_eq!(
        protocol_version("## [Unreleased] — wire protocol 2"),
        Some(2)
    );
}
