//! The documented example configuration, `config/walhook.toml`: it parses,
//! it sets every key to its default, and it documents every key that
//! `src/config/` accepts, with its default and (where one exists) its
//! environment variable and flag.

use std::collections::BTreeSet;
use std::path::Path;

use walhook::config::Config;

const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/walhook.toml");
const EXAMPLE: &str = include_str!("../config/walhook.toml");
/// The file structs of `src/config/`, the section each one reads and the
/// source that declares it.
const FILE_STRUCTS: &[(&str, &str, &str)] = &[
    ("FileConfig", "", include_str!("../src/config/mod.rs")),
    (
        "FileCapture",
        "capture",
        include_str!("../src/config/capture.rs"),
    ),
    (
        "FileDelivery",
        "delivery",
        include_str!("../src/config/delivery.rs"),
    ),
    ("FileAdmin", "admin", include_str!("../src/config/admin.rs")),
    (
        "FileBackfill",
        "backfill",
        include_str!("../src/config/backfill.rs"),
    ),
];

/// Keys whose environment variable and flag DESIGN.md fixes.
const WITH_ENV_AND_FLAG: &[(&str, &str, &str)] = &[
    ("database_url", "DATABASE_URL", "--database-url"),
    ("capture.mode", "WALHOOK_MODE", "--mode"),
    (
        "delivery.allow_private_targets",
        "WALHOOK_ALLOW_PRIVATE_TARGETS",
        "--allow-private-targets",
    ),
    (
        "delivery.retry_schedule",
        "WALHOOK_RETRY_SCHEDULE",
        "--retry-schedule",
    ),
    (
        "delivery.timeout",
        "WALHOOK_DELIVERY_TIMEOUT",
        "--delivery-timeout",
    ),
    ("admin.listen", "WALHOOK_ADMIN_LISTEN", "--admin-listen"),
    ("admin.token", "WALHOOK_ADMIN_TOKEN", "--admin-token"),
    ("capture.slot", "WALHOOK_SLOT", "--slot"),
    (
        "backfill.max_rows_per_second",
        "WALHOOK_BACKFILL_MAX_ROWS_PER_SECOND",
        "--backfill-max-rows-per-second",
    ),
];

/// Every key the file structs of `src/config/` declare, as
/// `section.key` (or `key` at the top level), read from the source so a
/// key added there without documentation fails this test.
fn keys_in_config_source() -> BTreeSet<String> {
    let sections: BTreeSet<&str> = FILE_STRUCTS
        .iter()
        .map(|(_, section, _)| *section)
        .collect();
    let mut keys = BTreeSet::new();
    for (name, section, source) in FILE_STRUCTS {
        let start = source
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("src/config/ has no struct {name}"));
        let body = &source[start..];
        let body = &body[..body.find("\n}").expect("struct ends")];
        for line in body.lines().skip(1) {
            let line = line.trim();
            if line.starts_with("//") || line.starts_with("#[") {
                continue;
            }
            let Some((field, _)) = line.split_once(':') else {
                continue;
            };
            let field = field.trim().trim_start_matches("pub ").trim();
            if !field.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue; // a line of a multi-line attribute
            }
            if section.is_empty() && sections.contains(field) {
                continue; // a [section] table, checked through its own struct
            }
            keys.insert(if section.is_empty() {
                field.to_owned()
            } else {
                format!("{section}.{field}")
            });
        }
    }
    keys
}

/// For each `key = value` line of the example (also a commented-out one,
/// for keys without a default), its dotted name and the comment lines
/// right above it.
fn documented_keys() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut comment = String::new();
    let mut keys = Vec::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            comment.clear();
            continue;
        }
        let code = line
            .strip_prefix("# ")
            .filter(|rest| is_commented_out_key(rest))
            .unwrap_or(line);
        if !code.starts_with('#') && code.contains('=') {
            let key = code.split('=').next().unwrap_or_default().trim();
            let name = if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            keys.push((name, std::mem::take(&mut comment)));
        } else if line.starts_with('#') {
            comment.push_str(line);
            comment.push('\n');
        } else {
            comment.clear();
        }
    }
    keys
}

/// `key = "value"`: a key without a default value, shown commented out.
fn is_commented_out_key(text: &str) -> bool {
    text.split_once(" = \"").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

#[test]
fn example_parses_and_gives_the_defaults() {
    let config =
        Config::from_toml(EXAMPLE, Path::new(EXAMPLE_PATH)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
}

#[test]
fn the_commented_database_url_is_valid_when_uncommented() {
    let text = EXAMPLE
        .replace("# database_url = ", "database_url = ")
        .replace("# token = ", "token = ");
    let config =
        Config::from_toml(&text, Path::new(EXAMPLE_PATH)).unwrap_or_else(|e| panic!("{e}"));
    let url = config
        .database_url
        .expect("database_url is set once uncommented");
    walhook::db::parse_url(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
}

#[test]
fn every_accepted_key_is_documented_once() {
    let accepted = keys_in_config_source();
    assert!(
        accepted.len() >= 19,
        "reading src/config/ found only {accepted:?}"
    );
    let documented = documented_keys();
    let names: Vec<&str> = documented.iter().map(|(name, _)| name.as_str()).collect();
    let unique: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(unique.len(), names.len(), "a key appears twice: {names:?}");
    assert_eq!(
        unique, accepted,
        "config/walhook.toml and src/config/ disagree on the keys"
    );
}

#[test]
fn every_key_has_a_comment_with_its_default() {
    for (name, comment) in documented_keys() {
        assert!(comment.lines().count() >= 1, "{name} has no comment");
        assert!(
            comment.contains("Default:"),
            "the comment of {name} does not give its default:\n{comment}"
        );
    }
}

#[test]
fn keys_with_env_and_flag_name_them() {
    let documented = documented_keys();
    for (key, env, flag) in WITH_ENV_AND_FLAG {
        let (_, comment) = documented
            .iter()
            .find(|(name, _)| name == key)
            .unwrap_or_else(|| panic!("{key} is not in config/walhook.toml"));
        assert!(
            comment.contains(&format!("Env: {env}")),
            "{key} does not name {env}:\n{comment}"
        );
        assert!(
            comment.contains(&format!("Flag: {flag}")),
            "{key} does not name {flag}:\n{comment}"
        );
    }
}

/// DESIGN.md fixes these names; the flag definitions must give exactly
/// them, and nothing may have a flag without a file key and variable.
#[test]
fn the_documented_settings_are_the_ones_with_flags() {
    let mut defined = walhook::config::overridable_settings();
    defined.sort();
    let mut documented: Vec<(String, String, String)> = WITH_ENV_AND_FLAG
        .iter()
        .map(|(k, e, f)| (k.to_string(), e.to_string(), f.to_string()))
        .collect();
    documented.sort();
    assert_eq!(defined, documented);
    let accepted = keys_in_config_source();
    for (key, _, _) in &defined {
        assert!(
            accepted.contains(key),
            "{key} has a flag but is no file key"
        );
    }
}

#[test]
fn env_names_in_the_example_are_known() {
    for word in EXAMPLE.split(|c: char| !(c.is_ascii_uppercase() || c == '_')) {
        if word.starts_with("WALHOOK_") {
            assert!(
                walhook::config::known_env().contains(&word.to_owned()),
                "{word} is not read by walhook"
            );
        }
    }
}
