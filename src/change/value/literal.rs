//! Postgres's array and record literals (`{1,"a b",NULL}`, `(1,"x",)`)
//! split into their elements' texts, quoting and escapes undone.

/// A parsed array literal: nested lists of element texts (`None` = NULL).
#[derive(Debug, PartialEq)]
pub(super) enum ArrayItem {
    /// An element's text; `None` for NULL.
    Element(Option<String>),
    /// A sub-array of a multidimensional array.
    Nested(Vec<ArrayItem>),
}

/// Parses `{1,2}`, `{{1,NULL},{"a \"b\"",c}}`, `[0:1]={1,2}`, `{}`.
/// Lower bounds are dropped: JSON arrays start at 0 whatever Postgres
/// numbers them from.
pub(super) fn parse_array(text: &str, delimiter: char) -> Option<Vec<ArrayItem>> {
    let text = text.trim();
    let body = if text.starts_with('[') {
        text.split_once('=')?.1.trim_start()
    } else {
        text
    };
    let mut chars = body.chars().peekable();
    let items = parse_array_level(&mut chars, delimiter)?;
    if chars.any(|c| !c.is_whitespace()) {
        return None;
    }
    Some(items)
}

fn parse_array_level(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    delimiter: char,
) -> Option<Vec<ArrayItem>> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    skip_whitespace(chars);
    if chars.next_if_eq(&'}').is_some() {
        return Some(items);
    }
    loop {
        skip_whitespace(chars);
        match chars.peek()? {
            '{' => items.push(ArrayItem::Nested(parse_array_level(chars, delimiter)?)),
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                items.push(ArrayItem::Element(Some(value)));
            }
            _ => {
                let mut value = String::new();
                let mut escaped = false;
                while let Some(&c) = chars.peek() {
                    if c == delimiter || c == '}' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        value.push(chars.next()?);
                        escaped = true;
                    } else {
                        value.push(c);
                    }
                }
                let value = value.trim_end().to_owned();
                if !escaped && value.eq_ignore_ascii_case("NULL") {
                    items.push(ArrayItem::Element(None));
                } else {
                    items.push(ArrayItem::Element(Some(value)));
                }
            }
        }
        skip_whitespace(chars);
        match chars.next()? {
            '}' => return Some(items),
            c if c == delimiter => {}
            _ => return None,
        }
    }
}

fn skip_whitespace(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// Parses a record literal `(1,"a b",)` into its field texts; an empty
/// field is NULL, `""` is the empty string.
pub(super) fn parse_record(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    let mut fields = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let mut value = String::new();
        let mut present = false;
        loop {
            match chars.peek() {
                None | Some(',') => break,
                Some('"') => {
                    chars.next();
                    present = true;
                    loop {
                        match chars.next()? {
                            '\\' => value.push(chars.next()?),
                            '"' if chars.next_if_eq(&'"').is_some() => value.push('"'),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                }
                Some('\\') => {
                    chars.next();
                    present = true;
                    value.push(chars.next()?);
                }
                Some(&c) => {
                    chars.next();
                    present = true;
                    value.push(c);
                }
            }
        }
        fields.push(present.then_some(value));
        if chars.next().is_none() {
            return Some(fields);
        }
    }
}
