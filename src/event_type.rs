//! How event types spell table names, so that two tables never share a type.
//!
//! An event type is `<table>.<action>` for a table in `public` and
//! `<schema>.<table>.<action>` otherwise. A name that is not a plain
//! lowercase identifier (`^[a-z_][a-z0-9_$]*$`) is written double-quoted,
//! with an inner `"` doubled, as in SQL: `public."audit.log"` gives
//! `"audit.log".insert`, while `audit.log` gives `audit.log.insert`.
//!
//! Patterns are split into parts by the same rules. An unquoted part is
//! taken literally (`Orders.insert` names the table `Orders`, as it always
//! has), a quoted one is unquoted first, and an unquoted `*` is a wildcard.
//! The SQL function `walhook.event_type_parts` implements the same split.

/// One part of an event type or pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// An unquoted `*`.
    Any,
    /// A name, unquoted.
    Name(String),
}

impl Part {
    /// Does this part (of a pattern) accept `name`?
    pub fn accepts(&self, name: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Name(own) => own == name,
        }
    }
}

/// Is `name` written as it is in an event type (no quotes needed)?
pub fn is_plain(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

/// `name` as one part of an event type: itself when plain, else quoted.
pub fn quote_part(name: &str) -> String {
    if is_plain(name) {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The table part of an event type: `orders`, `audit.log`, `"audit.log"`.
///
/// ```
/// use walhook::event_type::table_prefix;
///
/// assert_eq!(table_prefix("public", "orders"), "orders");
/// assert_eq!(table_prefix("audit", "log"), "audit.log");
/// // Quoted, so it cannot be mistaken for the table `log` of `audit`.
/// assert_eq!(table_prefix("public", "audit.log"), r#""audit.log""#);
/// assert_eq!(table_prefix("public", "Orders"), r#""Orders""#);
/// ```
pub fn table_prefix(schema: &str, table: &str) -> String {
    if schema == "public" {
        quote_part(table)
    } else {
        format!("{}.{}", quote_part(schema), quote_part(table))
    }
}

/// Splits an event type or pattern into its parts; `None` when it is not
/// well formed (an empty part, an unclosed quote, whitespace outside
/// quotes, a quote inside an unquoted part).
///
/// ```
/// use walhook::event_type::{split_parts, Part};
///
/// let name = |n: &str| Part::Name(n.to_owned());
/// assert_eq!(
///     split_parts(r#""audit.log".insert"#),
///     Some(vec![name("audit.log"), name("insert")])
/// );
/// assert_eq!(split_parts("orders.*"), Some(vec![name("orders"), Part::Any]));
/// assert_eq!(split_parts("orders..insert"), None, "an empty part");
/// assert_eq!(split_parts(r#""orders.insert"#), None, "an unclosed quote");
/// ```
pub fn split_parts(text: &str) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
            take_quoted(quoted)?
        } else {
            take_unquoted(rest)?
        };
        parts.push(part);
        if after.is_empty() {
            return Some(parts);
        }
        rest = after.strip_prefix('.')?;
    }
}

/// A quoted part after its opening quote: the name and what follows the
/// closing quote.
fn take_quoted(text: &str) -> Option<(Part, &str)> {
    let mut name = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        if c != '"' {
            name.push(c);
            continue;
        }
        if text[index + 1..].starts_with('"') {
            name.push('"');
            chars.next();
            continue;
        }
        if name.is_empty() {
            return None;
        }
        return Some((Part::Name(name), &text[index + 1..]));
    }
    None
}

fn take_unquoted(text: &str) -> Option<(Part, &str)> {
    let end = text.find('.').unwrap_or(text.len());
    let word = &text[..end];
    if word.is_empty() || word.chars().any(|c| c == '"' || c.is_whitespace()) {
        return None;
    }
    let part = if word == "*" {
        Part::Any
    } else {
        Part::Name(word.to_owned())
    };
    Some((part, &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Part {
        Part::Name(text.to_owned())
    }

    #[test]
    fn plain_names_stay_as_they_are_and_others_are_quoted() {
        assert_eq!(table_prefix("public", "orders"), "orders");
        assert_eq!(table_prefix("audit", "log"), "audit.log");
        assert_eq!(table_prefix("public", "audit.log"), "\"audit.log\"");
        assert_eq!(table_prefix("public", "Ünïcode Täble"), "\"Ünïcode Täble\"");
        assert_eq!(table_prefix("Sales", "a\"b"), "\"Sales\".\"a\"\"b\"");
        assert_eq!(table_prefix("public", "t$1"), "t$1");
        assert_eq!(table_prefix("public", "1t"), "\"1t\"");
    }

    #[test]
    fn two_tables_never_share_a_prefix() {
        assert_ne!(
            table_prefix("public", "audit.log"),
            table_prefix("audit", "log")
        );
        assert_ne!(table_prefix("a.b", "c"), table_prefix("a", "b.c"));
    }

    #[test]
    fn parts_are_split_outside_quotes() {
        assert_eq!(
            split_parts("\"audit.log\".insert"),
            Some(vec![name("audit.log"), name("insert")])
        );
        assert_eq!(
            split_parts("\"a\"\"b\".*"),
            Some(vec![name("a\"b"), Part::Any])
        );
        assert_eq!(
            split_parts("\"*\".insert"),
            Some(vec![name("*"), name("insert")])
        );
        assert_eq!(
            split_parts("Orders.insert"),
            Some(vec![name("Orders"), name("insert")])
        );
    }

    #[test]
    fn malformed_parts_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            "\"a",
            "\"\".insert",
            "a b.insert",
            "a\"b.insert",
            "\"a\"b.insert",
        ] {
            assert_eq!(split_parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_prefix_splits_back_into_its_names() {
        for (schema, table) in [
            ("public", "audit.log"),
            ("x\"y", "Ünïcode Täble"),
            ("s", "*"),
        ] {
            let text = format!("{}.insert", table_prefix(schema, table));
            let parts = split_parts(&text).expect("well formed");
            let expected: Vec<Part> = if schema == "public" {
                vec![name(table), name("insert")]
            } else {
                vec![name(schema), name(table), name("insert")]
            };
            assert_eq!(parts, expected, "{text}");
        }
    }
}
