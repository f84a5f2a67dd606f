//! The shape of the source tree, checked by reading it: no file too long to
//! read in one sitting, no two modules that import each other, imports that
//! only point down the layers, and the trigger source's capture rows
//! written by the trigger source alone.
//!
//! The layers are the table [`LAYERS`] below; `src/lib.rs` describes the
//! same layers for readers of the code, and
//! [`the_library_documents_the_layers_of_this_test`] keeps the two equal.
//!
//! Known violations that are being fixed are listed in the `ALLOWED_*`
//! tables right below, each with what it is. An entry that no longer
//! matches anything fails the test too: delete it once its fix has landed.
//!
//! Imports are read from the code with comments and string literals taken
//! out: `use crate::...` trees, `crate::a::b` paths in expressions,
//! `super::` and `self::` paths (resolved from the module they are written
//! in, inline `mod tests { ... }` blocks included), and `walhook::` paths in
//! `src/main.rs`. A path names the deepest module of the tree it reaches
//! (`crate::db::Settings` imports `db`).

#[path = "structure/code.rs"]
mod code;
#[path = "structure/tree.rs"]
mod tree;

use std::collections::{BTreeMap, BTreeSet};

use code::writes_table;
use tree::{cycles, reaches, read, relative, root, rust_files, top, SourceTree};

// ---------------------------------------------------------------------------
// Known violations, being fixed now. Delete an entry when its fix lands (the
// test says which entries no longer match).
// ---------------------------------------------------------------------------

/// Files over [`MAX_LINES`] lines, as paths from the repository root.
const ALLOWED_LONG_FILES: &[&str] = &[];

/// Imports between sibling modules that close a cycle, as `(importing
/// module, imported module)`: the edge that is going away.
const ALLOWED_CYCLE_EDGES: &[(&str, &str)] = &[];

/// Imports from a lower layer up, as `(importing top-level module, imported
/// top-level module)`.
const ALLOWED_UPWARD: &[(&str, &str)] = &[];

/// Statements that write a table another module owns, as `(file, table)`.
const ALLOWED_FOREIGN_WRITES: &[(&str, &str)] = &[];

// ---------------------------------------------------------------------------
// The rules.
// ---------------------------------------------------------------------------

/// No source, test or benchmark file is longer than this.
const MAX_LINES: usize = 700;

/// The layers, lowest first, each with its top-level modules (`main` is the
/// binary, `src/main.rs`). A module may import from its own layer (as long
/// as no two modules import each other) and from the layers below it, never
/// from a layer above. A module that is in no layer fails the test: add it
/// where it belongs, here and in the `src/lib.rs` doc.
const LAYERS: &[(&str, &[&str])] = &[
    // Types and plumbing with no opinion about the pipeline: settings,
    // connections, sockets, the catalog cache, the row change itself,
    // metric names and stage health, the schema migrations.
    (
        "foundation",
        &[
            "backoff",
            "socket",
            "config",
            "metrics",
            "health",
            "event_type",
            "catalog",
            "change",
            "db",
            "pool",
            "migrate",
        ],
    ),
    // The pipeline's stages: capture, routing, the outbox, delivery.
    ("pipeline", &["source", "route", "outbox", "deliver"]),
    // Jobs built on the stages, and reports read from the database.
    (
        "services",
        &[
            "backfill",
            "setup",
            "upkeep",
            "status",
            "event_catalog",
            "inspect",
        ],
    ),
    // What people and machines talk to: the admin server and its console,
    // the health probe, the signature-checking receiver.
    ("edges", &["admin", "console", "healthcheck", "receiver"]),
    // The processes: `walhook run` (the relay, which starts the admin
    // server), the demo (which runs a relay) and the command line.
    ("process", &["relay", "demo", "main"]),
];

/// Tables whose rows only their owner writes (insert, update, delete), as
/// `(table, owning module)`: the owner and its submodules may write them.
const TABLE_OWNERS: &[(&str, &str)] = &[
    // The trigger source's capture rows: it alone lets go of them.
    ("walhook.capture", "source::trigger"),
    ("walhook.schema_migrations", "migrate"),
    ("walhook.backfill_jobs", "backfill"),
];

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

#[test]
fn no_file_is_over_the_line_limit() {
    let mut long = BTreeMap::new();
    for dir in ["src", "tests", "benches"] {
        for path in rust_files(&root().join(dir)) {
            let lines = read(&path).lines().count();
            if lines > MAX_LINES {
                long.insert(relative(&path), lines);
            }
        }
    }
    let mut problems = Vec::new();
    for (file, lines) in &long {
        if !ALLOWED_LONG_FILES.contains(&file.as_str()) {
            problems.push(format!(
                "{file} has {lines} lines, over {MAX_LINES}: split it by role"
            ));
        }
    }
    for file in ALLOWED_LONG_FILES {
        if !long.contains_key(*file) {
            problems.push(format!(
                "ALLOWED_LONG_FILES lists {file}, which is no longer over {MAX_LINES} lines: delete the entry"
            ));
        }
    }
    assert_no_problems("file length", problems);
}

#[test]
fn no_two_modules_import_each_other() {
    let tree = SourceTree::read();
    let edges = tree.sibling_edges();
    let allowed: BTreeSet<(String, String)> = ALLOWED_CYCLE_EDGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let checked: BTreeMap<_, _> = edges
        .iter()
        .filter(|(edge, _)| !allowed.contains(*edge))
        .map(|(edge, sites)| (edge.clone(), sites.clone()))
        .collect();
    let mut problems: Vec<String> = cycles(&checked)
        .iter()
        .map(|cycle| {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|pair| {
                    let edge = (pair[0].clone(), pair[1].clone());
                    let site = checked[&edge].first().cloned().unwrap_or_default();
                    format!("{} -> {} ({site})", pair[0], pair[1])
                })
                .collect();
            format!("a cycle: {}; remove one of these imports", steps.join(", "))
        })
        .collect();
    for (from, to) in &allowed {
        let on_cycle = edges.contains_key(&(from.clone(), to.clone())) && reaches(&edges, to, from);
        if !on_cycle {
            problems.push(format!(
                "ALLOWED_CYCLE_EDGES lists {from} -> {to}, which no longer closes a cycle: delete the entry"
            ));
        }
    }
    assert_no_problems("module cycles", problems);
}

#[test]
fn imports_point_down_the_layers() {
    let tree = SourceTree::read();
    let layer_of = layer_index();
    let mut problems = Vec::new();
    let mut upward: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for module in tree.top_level_modules() {
        if !layer_of.contains_key(module.as_str()) {
            problems.push(format!(
                "module {module} is in no layer: add it to LAYERS in tests/structure.rs and to the layers in the src/lib.rs doc"
            ));
        }
    }
    for import in &tree.imports {
        let (from, to) = (top(&import.from), top(&import.to));
        let (Some(&low), Some(&high)) = (layer_of.get(to), layer_of.get(from)) else {
            continue;
        };
        if low > high {
            upward
                .entry((from.to_owned(), to.to_owned()))
                .or_default()
                .push(import.site());
        }
    }
    for ((from, to), sites) in &upward {
        if !ALLOWED_UPWARD.contains(&(from.as_str(), to.as_str())) {
            problems.push(format!(
                "{from} ({}) imports {to} ({}), a higher layer, at {}",
                layer_name(from),
                layer_name(to),
                sites.join(", ")
            ));
        }
    }
    for (from, to) in ALLOWED_UPWARD {
        if !upward.contains_key(&(from.to_string(), to.to_string())) {
            problems.push(format!(
                "ALLOWED_UPWARD lists {from} -> {to}, which is no longer imported: delete the entry"
            ));
        }
    }
    assert_no_problems("layers", problems);
}

#[test]
fn tables_are_written_by_their_owners() {
    let tree = SourceTree::read();
    let mut found = BTreeSet::new();
    let mut problems = Vec::new();
    for file in &tree.files {
        for (line, text) in &file.strings {
            for (table, owner) in TABLE_OWNERS {
                let owned = file.module == *owner || file.module.starts_with(&format!("{owner}::"));
                if owned || !writes_table(text, table) {
                    continue;
                }
                let path = relative(&file.path);
                if ALLOWED_FOREIGN_WRITES.contains(&(path.as_str(), table)) {
                    found.insert((path, table.to_string()));
                } else {
                    problems.push(format!(
                        "{path}:{line} writes {table}, whose rows only {owner} writes"
                    ));
                }
            }
        }
    }
    for (path, table) in ALLOWED_FOREIGN_WRITES {
        if !found.contains(&(path.to_string(), table.to_string())) {
            problems.push(format!(
                "ALLOWED_FOREIGN_WRITES lists {path} writing {table}, which it no longer does: delete the entry"
            ));
        }
    }
    assert_no_problems("table owners", problems);
}

#[test]
fn the_library_documents_the_layers_of_this_test() {
    let documented = documented_layers(&read(&root().join("src/lib.rs")));
    let tested: Vec<(String, BTreeSet<String>)> = LAYERS
        .iter()
        .map(|(name, modules)| {
            let modules = modules.iter().map(|m| m.to_string()).collect();
            (name.to_string(), modules)
        })
        .collect();
    assert_eq!(
        documented, tested,
        "the layers in the src/lib.rs doc (lines `//! - **layer**: a, b`) differ from LAYERS in tests/structure.rs"
    );
}

// ---------------------------------------------------------------------------
// The layers, the documentation, files.
// ---------------------------------------------------------------------------

fn layer_index() -> BTreeMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(n, (_, modules))| modules.iter().map(move |m| (*m, n)))
        .collect()
}

fn layer_name(module: &str) -> &'static str {
    LAYERS
        .iter()
        .find(|(_, modules)| modules.contains(&module))
        .map_or("no layer", |(name, _)| name)
}

/// The layers the `src/lib.rs` doc lists, as `//! - **name**: a, b, c`
/// lines (module names may be written as links, `[a]`).
fn documented_layers(lib: &str) -> Vec<(String, BTreeSet<String>)> {
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! - **"))
        .filter_map(|rest| rest.split_once("**:"))
        .map(|(name, modules)| {
            let modules = modules
                .trim()
                .trim_end_matches('.')
                .split(',')
                .map(|m| m.trim().trim_matches(|c| "[]`".contains(c)).to_owned())
                .filter(|m| !m.is_empty())
                .collect();
            (name.to_owned(), modules)
        })
        .collect()
}

fn assert_no_problems(check: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{check}: {} problem(s)\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
