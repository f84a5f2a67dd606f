//! The source tree as modules and the imports between them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::code::{module_paths, strip_comments_and_strings, tokenize};

/// Every module of the library and the binary, with the imports between them.
pub struct SourceTree {
    pub files: Vec<SourceFile>,
    pub imports: Vec<Import>,
}

/// One import of one module by another (both file modules).
pub struct Import {
    pub from: String,
    pub to: String,
    pub file: String,
    pub line: usize,
}

impl Import {
    pub fn site(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

impl SourceTree {
    pub fn read() -> SourceTree {
        let src = root().join("src");
        let files: Vec<SourceFile> = rust_files(&src)
            .into_iter()
            .map(|path| {
                let module = module_of(&path, &src);
                let text = read(&path);
                SourceFile::parse(path, module, &text)
            })
            .collect();
        let known: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
        let mut imports = Vec::new();
        for file in &files {
            for (line, path) in &file.paths {
                let to = deepest_module(path, &known);
                if to.is_empty() || to == file.module {
                    continue;
                }
                imports.push(Import {
                    from: file.module.clone(),
                    to,
                    file: relative(&file.path),
                    line: *line,
                });
            }
        }
        SourceTree { files, imports }
    }

    /// The modules `src/lib.rs` declares, and `main`.
    pub fn top_level_modules(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .map(|f| top(&f.module).to_owned())
            .filter(|m| !m.is_empty())
            .collect()
    }

    /// Imports lifted to the two sibling modules they run between (see
    /// [`sibling_edge`]), each with where it is written.
    pub fn sibling_edges(&self) -> BTreeMap<(String, String), Vec<String>> {
        let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for import in &self.imports {
            if let Some(edge) = sibling_edge(&import.from, &import.to) {
                let sites = edges.entry(edge).or_default();
                if !sites.contains(&import.site()) {
                    sites.push(import.site());
                }
            }
        }
        edges
    }
}

/// An import between two modules as one between the modules that contain
/// them under their closest common parent: `deliver::worker` importing
/// `deliver::record::Item` is `worker -> record` under `deliver`, `admin`
/// importing `relay::capture` is `admin -> relay`. `None` where one module
/// contains the other: a parent re-exports and runs its children, children
/// use their parent's shared items, and neither makes a cycle.
pub fn sibling_edge(from: &str, to: &str) -> Option<(String, String)> {
    if from.is_empty() || to.is_empty() {
        return None; // the crate root only declares the modules
    }
    let from: Vec<&str> = from.split("::").collect();
    let to: Vec<&str> = to.split("::").collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].join("::"), to[..=common].join("::")))
}

/// Whether `to` can be reached from `from` along `edges`.
pub fn reaches(edges: &BTreeMap<(String, String), Vec<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut next = vec![from.to_owned()];
    while let Some(module) = next.pop() {
        if module == to {
            return true;
        }
        if !seen.insert(module.clone()) {
            continue;
        }
        next.extend(
            edges
                .keys()
                .filter(|(a, _)| *a == module)
                .map(|(_, b)| b.clone()),
        );
    }
    false
}

/// One cycle for each group of modules that reach each other: the
/// shortest one through the group's first module, as the modules along it,
/// first and last the same.
pub fn cycles(edges: &BTreeMap<(String, String), Vec<String>>) -> Vec<Vec<String>> {
    let modules: BTreeSet<&String> = edges.keys().map(|(from, _)| from).collect();
    let mut grouped = BTreeSet::new();
    let mut found = Vec::new();
    for start in modules {
        if grouped.contains(start) {
            continue;
        }
        let group: BTreeSet<&String> = edges
            .keys()
            .map(|(_, to)| to)
            .filter(|m| *m != start && reaches(edges, start, m) && reaches(edges, m, start))
            .collect();
        grouped.extend(group.iter().cloned());
        if let Some(cycle) = shortest_cycle(edges, start).filter(|_| !group.is_empty()) {
            found.push(cycle);
        }
    }
    found
}

/// The shortest path from `start` back to itself, breadth first.
fn shortest_cycle(
    edges: &BTreeMap<(String, String), Vec<String>>,
    start: &str,
) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(module) = queue.pop_front() {
        for (_, next) in edges.keys().filter(|(from, _)| from == module) {
            if next == start {
                let mut path = vec![start.to_owned(), module.to_owned()];
                let mut at = module;
                while at != start {
                    at = came_from[at];
                    path.push(at.to_owned());
                }
                path.reverse();
                return Some(path);
            }
            if !came_from.contains_key(next.as_str()) {
                came_from.insert(next, module);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The module a path names: its longest prefix that is a module of the
/// tree (`""`, the crate root, when none is).
pub fn deepest_module(path: &[String], known: &BTreeSet<String>) -> String {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|module| known.contains(module))
        .unwrap_or_default()
}

/// `relay` of `relay::capture`.
pub fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

/// The module path of a file under `src/`: `db` for `db.rs` and
/// `db/mod.rs`, `source::replication::conn`, `main` for the binary, `""`
/// for `lib.rs`.
pub fn module_of(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap_or(path);
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib") {
            parts.push(stem.to_owned());
        }
    }
    parts.join("::")
}

/// One file's module, the module paths its code names (with their lines)
/// and its string literals (with their lines).
pub struct SourceFile {
    pub path: PathBuf,
    pub module: String,
    pub paths: Vec<(usize, Vec<String>)>,
    pub strings: Vec<(usize, String)>,
}

impl SourceFile {
    pub fn parse(path: PathBuf, module: String, text: &str) -> SourceFile {
        let (code, strings) = strip_comments_and_strings(text);
        let tokens = tokenize(&code);
        // The binary reaches the library by its crate name; its own
        // `crate::` paths stay inside it.
        let crate_name = if module == "main" { "walhook" } else { "crate" };
        let paths = module_paths(&tokens, &module, crate_name);
        SourceFile {
            path,
            module,
            paths,
            strings,
        }
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `.rs` files under `dir`, sorted (none when it does not exist).
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                // Downloaded packages of the AsyncAPI check, not ours.
                if !path.ends_with("node_modules") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
#[test]
pub fn sibling_edges_lift_to_the_modules_under_a_common_parent() {
    assert_eq!(
        sibling_edge("deliver::worker", "deliver::record"),
        Some(("deliver::worker".into(), "deliver::record".into()))
    );
    assert_eq!(
        sibling_edge("admin", "relay::capture"),
        Some(("admin".into(), "relay".into()))
    );
    assert_eq!(
        sibling_edge("relay::capture", "relay"),
        None,
        "child to parent"
    );
    assert_eq!(
        sibling_edge("relay", "relay::capture"),
        None,
        "parent to child"
    );
    let cycle: BTreeMap<(String, String), Vec<String>> = [
        (("a".to_string(), "b".to_string()), vec![]),
        (("b".to_string(), "c".to_string()), vec![]),
        (("c".to_string(), "a".to_string()), vec![]),
    ]
    .into_iter()
    .collect();
    assert!(reaches(&cycle, "b", "a"));
    assert!(!reaches(&cycle, "d", "a"));
    assert_eq!(cycles(&cycle), vec![vec!["a", "b", "c", "a"]]);
}
