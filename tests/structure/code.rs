//! Reading Rust code without a parser: comments and literals taken out,
//! tokens, and the module paths a file names.

/// A token of code: an identifier, `::` or one punctuation character.
#[derive(Debug)]
pub struct Token {
    text: String,
    line: usize,
}

pub fn tokenize(code: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        let text = if c == '\n' {
            line += 1;
            continue;
        } else if c.is_whitespace() {
            continue;
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(c) = chars.next_if(|c| c.is_alphanumeric() || *c == '_') {
                word.push(c);
            }
            word
        } else if c == ':' && chars.next_if_eq(&':').is_some() {
            "::".to_owned()
        } else {
            c.to_string()
        };
        tokens.push(Token { text, line });
    }
    tokens
}

/// Every path that starts at the crate root, `super` or `self`, expanded
/// (a `use` tree gives one path per leaf) and made absolute: segments from
/// the crate root. Inline `mod name { ... }` blocks count for `super` and
/// `self`.
pub fn module_paths(tokens: &[Token], module: &str, crate_name: &str) -> Vec<(usize, Vec<String>)> {
    let file_module: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let text = tokens[i].text.as_str();
        let is_path = tokens.get(i + 1).is_some_and(|t| t.text == "::");
        match text {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t.text == "{") => {
                inline.push((tokens[i + 1].text.clone(), depth));
                depth += 1;
                i += 3;
                continue;
            }
            _ if is_path && (text == crate_name || text == "super" || text == "self") => {
                let mut here = file_module.clone();
                here.extend(inline.iter().map(|(name, _)| name.clone()));
                let line = tokens[i].line;
                let mut base = if text == crate_name { Vec::new() } else { here };
                i += 2;
                if text == "super" {
                    base.pop();
                    while tokens.get(i).is_some_and(|t| t.text == "super")
                        && tokens.get(i + 1).is_some_and(|t| t.text == "::")
                    {
                        base.pop();
                        i += 2;
                    }
                }
                let mut leaves = Vec::new();
                use_tree(tokens, &mut i, base, &mut leaves);
                paths.extend(leaves.into_iter().map(|path| (line, path)));
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    paths
}

/// Reads one `use` tree (or expression path) at `tokens[*i]`, after a
/// `::`: `a::b`, `a::{b, c::{self, d}}`, `a::*`, `a as b`.
fn use_tree(tokens: &[Token], i: &mut usize, prefix: Vec<String>, leaves: &mut Vec<Vec<String>>) {
    let Some(token) = tokens.get(*i) else {
        leaves.push(prefix);
        return;
    };
    match token.text.as_str() {
        "{" => {
            *i += 1;
            while let Some(token) = tokens.get(*i) {
                match token.text.as_str() {
                    "}" => {
                        *i += 1;
                        return;
                    }
                    "," => *i += 1,
                    _ => {
                        let before = *i;
                        use_tree(tokens, i, prefix.clone(), leaves);
                        if *i == before {
                            *i += 1;
                        }
                    }
                }
            }
        }
        "*" => {
            *i += 1;
            leaves.push(prefix);
        }
        word if word.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
            let mut path = prefix;
            if word != "self" {
                path.push(word.to_owned());
            }
            *i += 1;
            if tokens.get(*i).is_some_and(|t| t.text == "::") {
                *i += 1;
                use_tree(tokens, i, path, leaves);
            } else {
                if tokens.get(*i).is_some_and(|t| t.text == "as") {
                    *i += 2;
                }
                leaves.push(path);
            }
        }
        _ => leaves.push(prefix),
    }
}

/// The code with comments and string and character literals blanked out
/// (lines kept), and the string literals' contents with their lines.
pub fn strip_comments_and_strings(text: &str) -> (String, Vec<(usize, String)>) {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut strings = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Blanks chars[from..to] into `code`, keeping its line breaks.
    let blank = |code: &mut String, line: &mut usize, from: usize, to: usize| {
        for &c in &chars[from..to] {
            if c == '\n' {
                *line += 1;
                code.push('\n');
            } else {
                code.push(' ');
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let end = if c == '/' && next == Some('/') {
            (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len())
        } else if c == '/' && next == Some('*') {
            block_comment_end(&chars, i)
        } else if c == '"' {
            let end = quoted_end(&chars, i + 1);
            strings.push((line, chars[i + 1..end - 1].iter().collect()));
            end
        } else if let Some((open, hashes)) = raw_string_start(&chars, i, after_word) {
            let end = raw_string_end(&chars, open, hashes);
            let close = end.saturating_sub(hashes + 1).max(open);
            strings.push((line, chars[open..close].iter().collect()));
            end
        } else if c == '\'' {
            char_literal_end(&chars, i).unwrap_or(i)
        } else {
            i
        };
        if end > i {
            blank(&mut code, &mut line, i, end);
            i = end;
        } else {
            if c == '\n' {
                line += 1;
            }
            code.push(c);
            i += 1;
        }
    }
    (code, strings)
}

/// Past the `*/` that closes the (possibly nested) comment opened at `start`.
fn block_comment_end(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// Past the `"` that closes a string whose contents start at `from`.
fn quoted_end(chars: &[char], from: usize) -> usize {
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// At `r"`, `r#"`, `br#"`: where the contents start and how many `#`.
fn raw_string_start(chars: &[char], i: usize, after_word: bool) -> Option<(usize, usize)> {
    let mut j = i;
    if chars[j] == 'b' && !after_word {
        j += 1;
    } else if after_word {
        return None;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|c| **c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some((j + hashes + 1, hashes))
}

/// Past the `"` and `#`s that close a raw string.
fn raw_string_end(chars: &[char], from: usize, hashes: usize) -> usize {
    (from..chars.len())
        .find(|&j| {
            chars[j] == '"'
                && chars[j + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|c| **c == '#')
                    .count()
                    == hashes
        })
        .map_or(chars.len(), |j| j + 1 + hashes)
}

/// Past a character literal at `i` (`'a'`, `'\n'`, `'\u{1F600}'`); `None`
/// for a lifetime or label (`'a`, `'static`).
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        // From the character after the escaped one, so `'\''` ends right.
        return (i + 3..chars.len())
            .find(|&j| chars[j] == '\'')
            .map(|j| j + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
}

/// Whether SQL text inserts into, updates or deletes from `table`.
pub fn writes_table(sql: &str, table: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.windows(2).enumerate().any(|(n, pair)| {
        pair[1] == table
            && match pair[0].as_str() {
                "into" => n > 0 && words[n - 1] == "insert",
                "from" => n > 0 && words[n - 1] == "delete",
                "update" => true,
                _ => false,
            }
    })
}

/// The reader on made-up code, so that a reader that stops seeing imports
/// (and so a check that can no longer fail) is noticed.
#[test]
fn the_reader_finds_every_kind_of_import() {
    use super::tree::{deepest_module, SourceFile};
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    let file = SourceFile::parse(
        PathBuf::from("src/a/b.rs"),
        "a::b".into(),
        r#"
            use crate::{c::{self, d::E}, f as g};
            use super::h;
            // use crate::commented_out;
            const SQL: &str = "crate::in_a_string";
            fn x() { crate::i::j(); let _ = '{'; }
            mod tests { use super::*; use super::super::k; }
        "#,
    );
    let known: BTreeSet<String> = ["a", "a::b", "a::h", "c", "c::d", "f", "i", "k"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let targets: BTreeSet<String> = file
        .paths
        .iter()
        .map(|(_, path)| deepest_module(path, &known))
        .collect();
    let want: BTreeSet<String> = ["c", "c::d", "f", "a::h", "i", "a::b", "a"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(targets, want);
    assert_eq!(file.strings.len(), 1);
    assert!(writes_table(
        "DELETE FROM walhook.capture WHERE id = ANY($1)",
        "walhook.capture"
    ));
    assert!(writes_table(
        "insert into\n  walhook.capture (x)",
        "walhook.capture"
    ));
    assert!(!writes_table(
        "SELECT * FROM walhook.capture",
        "walhook.capture"
    ));
    assert!(!writes_table("UPDATE walhook.captures", "walhook.capture"));
}
